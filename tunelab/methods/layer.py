"""AdaptedLinear: what every layer that replaces an nn.Linear (or GPT-2's Conv1D) shares.

It owns the frozen base weight and bias (the same Parameter objects as the layer it
replaced), so the base keys keep their names in the model's state dict, and it rebuilds the
original layer type when the method is merged in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.methods.base import AdapterLayer


def linear_shape(layer: nn.Module) -> tuple[int, int]:
    """(out, in) of an nn.Linear, or of transformers' Conv1D (GPT-2), whose weight is (in, out)."""
    out_features, in_features = layer.weight.shape
    return (out_features, in_features) if isinstance(layer, nn.Linear) else (in_features, out_features)


class AdaptedLinear(AdapterLayer):
    def __init__(self, base: nn.Module):
        super().__init__()
        # transformers' Conv1D (GPT-2) stores its weight as (in, out): "fan in, fan out"
        self.fan_in_fan_out = not isinstance(base, nn.Linear)
        self.out_features, self.in_features = linear_shape(base)
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def linear_weight(self) -> torch.Tensor:
        """The base weight as (out, in), a view for Conv1D layers."""
        return self.weight.T if self.fan_in_fan_out else self.weight

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear_weight(), self.bias)  # (..., in) -> (..., out)

    def new_parameter(self, *shape: int) -> nn.Parameter:
        """An uninitialised trainable tensor on the base weight's device and dtype."""
        return nn.Parameter(torch.empty(shape, device=self.weight.device, dtype=self.weight.dtype))

    @torch.no_grad()
    def rebuilt(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        """The replaced layer type (nn.Linear or Conv1D) holding `weight` (out, in) and `bias`."""
        if self.fan_in_fan_out:
            from transformers.pytorch_utils import Conv1D

            layer = Conv1D(self.out_features, self.in_features).to(self.weight)
            layer.weight.copy_(weight.T)
        else:
            layer = nn.Linear(self.in_features, self.out_features, bias=bias is not None,
                              device=self.weight.device, dtype=self.weight.dtype)
            layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        return layer

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}"
