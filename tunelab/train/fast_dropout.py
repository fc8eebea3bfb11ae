"""Dropout with a cheaper mask on CPU.

torch's CPU dropout draws one random number per element (`bernoulli_`), which on a small
encoder costs more than a tenth of a training step. This mask takes three 16-bit lanes from
each 64-bit draw of the same generator (so seeding and checkpointed RNG state work as
before): a third of the draws, with the keep probability rounded to 1/65536. On other
devices, and in eval mode, it is plain `F.dropout`.
"""

from __future__ import annotations

import torch
from torch import nn

LANES = 3  # int64.random_() fills [0, 2**63): the top 16-bit lane has one bit fewer


class FastDropout(nn.Dropout):
    """nn.Dropout with the same p and semantics; keeps the `p` attribute modules read."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu" or self.inplace:
            return super().forward(x)
        n = x.numel()
        draws = torch.empty(-(-n // LANES), dtype=torch.int64).random_()  # (m,)
        lanes = draws.view(torch.int16).view(-1, 4)[:, :LANES]  # (m, 3), uniform over int16
        threshold = round(self.p * 65536) - 32768
        keep = (lanes >= threshold).reshape(-1)[:n].view(x.shape)  # P(keep) = 1 - p
        # the kept-and-rescaled mask made outside autograd: one multiply forward and backward
        scale = torch.full((), 1.0 / (1.0 - self.p), dtype=x.dtype)
        mask = torch.where(keep, scale, torch.zeros((), dtype=x.dtype))  # (*x.shape)
        return x * mask


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every nn.Dropout in `model` for FastDropout in place; returns how many."""
    count = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace))
                count += 1
    return count
