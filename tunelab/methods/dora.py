"""DoRA (Liu et al., 2024): LoRA's direction update plus a trainable per-row magnitude.

W' = m * (W + s B A) / ||W + s B A||_row, with the norm treated as a constant in the
backward pass, as in the paper and PEFT.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from tunelab.methods.lora import LoraLinear, LoraMethod, LoraOptions


class DoraConfig(LoraOptions):
    name: Literal["dora"] = "dora"


class DoraLinear(LoraLinear):
    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float, scaling: str):
        super().__init__(base, r, alpha, dropout, scaling)
        self.lora_magnitude_vector = nn.Parameter(torch.empty(self.out_features, **self.options()))
        self.finish_init()

    @torch.no_grad()
    def finish_init(self) -> None:
        self.lora_magnitude_vector.copy_(self._row_norm())

    def _row_norm(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.linear_weight() + self.delta_weight(), dim=1)  # (out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        base = self.base_matmul(x)  # (..., out), no bias yet
        dropped = self.lora_dropout(x)
        base_dropped = base if dropped is x else self.base_matmul(dropped)
        scale = self.lora_magnitude_vector / self._row_norm().detach()  # (out,)
        update = self.lora_B(self.lora_A(dropped)) * self.scaling  # (..., out)
        out = base + (scale - 1) * base_dropped + scale * update
        return out + self.bias if self.bias is not None else out

    @torch.no_grad()
    def merged(self) -> nn.Module:
        layer = super().merged()
        if self.running_base():
            return layer
        scale = self.lora_magnitude_vector / self._row_norm()  # (out,)
        layer.weight.mul_(scale if self.fan_in_fan_out else scale.unsqueeze(1))
        return layer


class DoraMethod(LoraMethod):
    name = "dora"
    config_cls = DoraConfig
    layer_cls = DoraLinear
    use_dora = True
