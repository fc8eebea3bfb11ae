"""Dropout with a cheaper mask on CPU.

torch's CPU dropout draws one random number per element (`bernoulli_`), which on a small
encoder costs more than a tenth of a training step. This mask takes four 16-bit lanes from
each full-range 64-bit draw of the same generator (so seeding and checkpointed RNG state
work as before): a quarter of the draws, with the keep probability rounded to 1/65536. On
other devices, and in eval mode, it is plain `F.dropout`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LANES = 4  # 16-bit lanes in one 64-bit draw


class FastDropout(nn.Dropout):
    """nn.Dropout with the same p and semantics; keeps the `p` attribute modules read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        # the kept-and-rescaled mask made outside autograd: one multiply forward and backward
        return x * scaled_keep_mask(x.shape, self.p, x.dtype)


def scaled_keep_mask(shape: torch.Size | tuple[int, ...], p: float,
                     dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `shape`: 1 / (1 - p) where kept (probability 1 - p), else 0."""
    n = math.prod(shape)
    # from=-2**63, to=None: every 64 bits random (plain random_() leaves the top one 0)
    draws = torch.empty(-(-n // LANES), dtype=torch.int64).random_(-2**63, None)  # (m,)
    lanes = draws.view(torch.int16)[:n]  # (n,), uniform over int16
    keep = lanes >= round(p * 65536) - 32768  # P(keep) = 1 - p
    return keep.view(shape).to(dtype).mul_(1.0 / (1.0 - p))  # (*shape)


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout in `model` for FastDropout in place; returns how many."""
    count = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace))
                count += 1
    return count
