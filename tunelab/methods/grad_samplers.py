"""Per-example gradients of tunelab's adapter layers, for DP-SGD (tunelab/train/privacy.py).

Opacus computes per-example gradients with one function per layer type, from the layer's
input and the gradient of its output. LoraLinear keeps its factors in child nn.Linear
modules that it never calls (it uses their weights in one fused GEMM), so hooks on those
children would never fire: the sampler is registered for the LoraLinear itself, and
ADAPTER_LAYERS tells the hooks to treat such a layer as one unit. Exact types only (Opacus
looks samplers up by type): DoRA's normalised update has no sampler here and is refused.
"""

from __future__ import annotations

import torch
from opacus.grad_sample import register_grad_sampler
from torch import nn

from tunelab.methods.ia3 import IA3Linear
from tunelab.methods.lora import LoraLinear

# layers whose trainable tensors sit in children the layer does not call as modules
ADAPTER_LAYERS: tuple[type[nn.Module], ...] = (LoraLinear, IA3Linear)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(B, ..., C) -> (B, T, C): one example per row, its positions flattened."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


@register_grad_sampler(LoraLinear)
def lora_grad_sample(layer: LoraLinear, activations: list[torch.Tensor],
                     backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """y = x W^T + s (x A^T) B^T, so per example n: dB = s g^T (x A^T), dA = s (g B)^T x.
    lora_dropout must be the identity (the config refuses dropout under privacy): the mask
    it drew is not in the layer's input."""
    x = _rows(activations[0]).to(backprops.dtype)  # (B, T, in)
    g = _rows(backprops)  # (B, T, out)
    a, b = layer.lora_A.weight, layer.lora_B.weight  # (r, in), (out, r)
    out: dict[nn.Parameter, torch.Tensor] = {}
    if b.requires_grad:
        down = x @ a.T.to(x.dtype)  # (B, T, r)
        out[b] = torch.bmm(g.transpose(1, 2), down).mul_(layer.scaling)  # (B, out, r)
    if a.requires_grad:
        up = g @ b.to(g.dtype)  # (B, T, r)
        out[a] = torch.bmm(up.transpose(1, 2), x).mul_(layer.scaling)  # (B, r, in)
    return out


@register_grad_sampler(IA3Linear)
def ia3_grad_sample(layer: IA3Linear, activations: list[torch.Tensor],
                    backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Output scaling y = (x W^T + b) * l: dl = sum_t (x W^T + b) * g. Input scaling
    y = (x * l) W^T + b: dl = sum_t x * (g W)."""
    x = _rows(activations[0]).to(backprops.dtype)  # (B, T, in)
    g = _rows(backprops)  # (B, T, out)
    if not layer.ia3_l.requires_grad:
        return {}
    if layer.is_feedforward:
        per = (x * (g @ layer.linear_weight().to(g.dtype))).sum(1)  # (B, in)
    else:
        per = (layer.base_forward(x) * g).sum(1)  # (B, out)
    return {layer.ia3_l: per.view(per.shape[0], *layer.ia3_l.shape)}
