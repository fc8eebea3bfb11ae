"""Attention with a cheap dropout mask for CPU training.

With attention dropout on (BERT-style encoders train with 0.1), torch's SDPA on CPU leaves
its fused kernel for the math path and draws one random number per attention weight
(`bernoulli_`), a few percent of a small encoder's step. This attention function is SDPA
except in that case, where it computes softmax(q k^T * scale + mask) with dropout by
FastDropout's mask (a quarter of the draws, from the same generator) and two batched
matmuls. Registered with transformers' AttentionInterface under NAME; a model switches to
it with `use_dropout_attention`, which changes nothing saved (transformers does not write
the attention implementation into config.json).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tunelab.kernels.fast_dropout import scaled_keep_mask

NAME = "tunelab_sdpa"


def dropout_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: torch.Tensor | None,
                      dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """q, k (B, H, Lq|Lk, d), v (B, H, Lk, dv) -> ((B, Lq, H, dv), None), as SDPA returns."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
    if (not dropout or query.device.type != "cpu" or key.shape[1] != query.shape[1]
            or (attention_mask is None and causal and query.shape[2] > 1)
            or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, is_causal=is_causal,
                                      **kwargs)
    b, h, lq, d = query.shape
    lk, dv = key.shape[2], value.shape[3]
    scale = scaling if scaling is not None else d ** -0.5
    q = query.reshape(b * h, lq, d)
    k = key.reshape(b * h, lk, d)
    v = value.reshape(b * h, lk, dv)
    scores = torch.bmm(q, k.transpose(1, 2)).view(b, h, lq, lk)  # (B, H, Lq, Lk)
    if attention_mask is None:
        scores = scores * scale
    else:
        scores = torch.add(additive(attention_mask, scores.dtype), scores, alpha=scale)
    probs = scores.softmax(-1, dtype=torch.float32).to(value.dtype)  # (B, H, Lq, Lk)
    probs = probs * scaled_keep_mask(probs.shape, dropout, probs.dtype)
    out = torch.bmm(probs.view(b * h, lq, lk), v)  # (B*H, Lq, dv)
    return out.view(b, h, lq, dv).transpose(1, 2), None  # (B, Lq, H, dv)


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An SDPA mask as a bias to add to the scores: boolean True -> 0, False -> the dtype's
    lowest value (not -inf, so a row with no key left stays finite); float masks as given."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, torch.finfo(dtype).min)


AttentionInterface.register(NAME, dropout_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # it reads the masks SDPA reads


def use_dropout_attention(model: nn.Module) -> int:
    """Switch every transformers model in `model` (itself, or a multitask model's task models)
    that runs SDPA to `dropout_attention`; returns how many it switched."""
    switched = 0
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.config._attn_implementation == "sdpa":
            module.set_attn_implementation(NAME)
            switched += module.config._attn_implementation == NAME
    return switched
