"""AdaptedLinear: what every layer that replaces an nn.Linear (or GPT-2's Conv1D) shares.

It owns the frozen base weight and bias (the same Parameter objects as the layer it
replaced), so the base keys keep their names in the model's state dict, and it rebuilds the
original layer type when the method is merged in. A quantized base (model.quantize,
models/quantize.py) is kept whole as `base_layer` instead: it computes its own product and
hands out its dequantized weight where a method needs the weight (DoRA's norm, merging).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.methods.base import AdapterLayer
from tunelab.models.quantize import QuantizedLinear


def linear_shape(layer: nn.Module) -> tuple[int, int]:
    """(out, in) of an nn.Linear, or of transformers' Conv1D (GPT-2), whose weight is (in, out)."""
    if isinstance(layer, QuantizedLinear):
        return layer.out_features, layer.in_features
    out_features, in_features = layer.weight.shape
    return (out_features, in_features) if isinstance(layer, nn.Linear) else (in_features, out_features)


def tensor_options(layer: nn.Module) -> dict[str, Any]:
    """device and dtype for tensors beside a linear layer's weight (a quantized one's: the
    dtype its weight had before quantization)."""
    if isinstance(layer, AdaptedLinear) and layer.base_layer is not None:
        layer = layer.base_layer
    if isinstance(layer, QuantizedLinear):
        return {"device": layer.qweight.device, "dtype": layer.param_dtype}
    return {"device": layer.weight.device, "dtype": layer.weight.dtype}


class AdaptedLinear(AdapterLayer):
    def __init__(self, base: nn.Module):
        super().__init__()
        # transformers' Conv1D (GPT-2) stores its weight as (in, out): "fan in, fan out"
        self.fan_in_fan_out = not isinstance(base, (nn.Linear, QuantizedLinear))
        self.out_features, self.in_features = linear_shape(base)
        # a quantized base (model.quantize) stays whole as a child: it owns the packed weight
        self.base_layer = base if isinstance(base, QuantizedLinear) else None
        self.weight = None if self.base_layer is not None else base.weight
        self.bias = base.bias
        if self.weight is not None:
            self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)

    def linear_weight(self) -> torch.Tensor:
        """The base weight as (out, in), a view for Conv1D layers, dequantized when quantized."""
        if self.base_layer is not None:
            return self.base_layer.dequantized_weight()
        return self.weight.T if self.fan_in_fan_out else self.weight

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.base_layer is not None:
            return self.base_layer(x)
        return F.linear(x, self.linear_weight(), self.bias)  # (..., in) -> (..., out)

    def base_matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x W^T without the bias; a quantized base never keeps its dequantized weight for backward."""
        if self.base_layer is not None:
            return self.base_layer.matmul(x)
        return F.linear(x, self.linear_weight())  # (..., in) -> (..., out)

    def options(self) -> dict[str, Any]:
        """device and dtype of the base weight, for the method's own tensors."""
        return tensor_options(self)

    def new_parameter(self, *shape: int) -> nn.Parameter:
        """An uninitialised trainable tensor on the base weight's device and dtype."""
        return nn.Parameter(torch.empty(shape, **self.options()))

    @torch.no_grad()
    def rebuilt(self, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        """The replaced layer type (nn.Linear or Conv1D) holding `weight` (out, in) and `bias`."""
        if self.fan_in_fan_out:
            from transformers.pytorch_utils import Conv1D

            layer = Conv1D(self.out_features, self.in_features).to(**self.options())
            layer.weight.copy_(weight.T)
        else:
            layer = nn.Linear(self.in_features, self.out_features, bias=bias is not None,
                              **self.options())
            layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
        return layer

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}"
