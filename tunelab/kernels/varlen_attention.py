"""Attention over packed rows one example at a time, with no T x T mask.

A packed row holds several examples end to end. A dense block-diagonal mask keeps each
example's attention inside itself, but it costs T x T memory and makes SDPA score every
query against every key of the row. This attention function runs SDPA on each example's
slice of the row instead (causal within it for decoders, full for encoders): work and memory
follow sum(n_i^2), not T^2, and each example gets exactly the attention it gets alone (the
same kernel on the same numbers). On this CPU (1 thread, SmolLM2's 9 query / 3 key-value
heads of 64) forward + backward of one layer's attention takes 47 ms for a 1,024-token row
of 4 examples against 201 ms with the dense mask, and 232 ms against 1,223 ms at 2,048
tokens and 8 examples (docs/speed.md).

Why not the alternatives, on torch 2.13 CPU: flex_attention has no backward there
("FlexAttention does not support backward on CPU"), compiled or not; SDPA over jagged nested
tensors finds no CPU kernel. flash-attn's varlen kernel (CUDA) reads the same
`cu_seq_lens_*` / `max_length_*` keywords, through transformers' flash_attention_2, so a model
loaded with it keeps it.

Registered with transformers' AttentionInterface under NAME, with SDPA's masks. A call that
carries `cu_seq_lens_q` (the packed row's example boundaries, passed to the model's forward
by `varlen_inputs`) runs per example; any other call (padded batches, generation) is
`dropout_attention`, i.e. SDPA.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from tunelab.kernels.dropout_attention import NAME as DROPOUT_ATTENTION
from tunelab.kernels.dropout_attention import dropout_attention

NAME = "tunelab_varlen"
# implementations switched to NAME (they compute the same thing on padded batches)
SWITCHABLE = ("sdpa", DROPOUT_ATTENTION)
# implementations that read cu_seq_lens_* themselves (transformers' flash-attn varlen path)
NATIVE = ("flash_attention_2", "flash_attention_3")


def varlen_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, cu_seq_lens_q: torch.Tensor | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """q (B, H, T, d), k and v (B, Hkv, T, d) -> ((B, T, H, dv), None), as SDPA returns.
    cu_seq_lens_q: (N + 1,) the boundaries of the N examples in the flattened (B * T) rows,
    0 first and B * T last, a boundary at every row start; then `attention_mask` is not read
    (the caller passes no padding mask: a row's padding is an example of its own)."""
    for name in ("cu_seq_lens_k", "max_length_q", "max_length_k"):
        kwargs.pop(name, None)
    if cu_seq_lens_q is None:
        return dropout_attention(module, query, key, value, attention_mask, dropout=dropout,
                                 scaling=scaling, is_causal=is_causal, **kwargs)
    return per_example(module, query, key, value, cu_seq_lens_q, dropout, scaling, is_causal,
                       kwargs), None


@torch.compiler.disable  # slicing by the batch's boundaries: compiled, one graph per layout
def per_example(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                cu: torch.Tensor, dropout: float, scaling: float | None, is_causal: bool | None,
                kwargs: dict[str, Any]) -> torch.Tensor:
    """varlen_attention's packed case: SDPA (dropout_attention) on each example's slice."""
    b, _, t, _ = query.shape
    bounds = check_bounds(cu.tolist(), b, t, key.shape[2])
    outs = []
    for start, end in pairwise(bounds):
        row, a = divmod(start, t)
        z = end - row * t
        out, _ = dropout_attention(module, query[row:row + 1, :, a:z], key[row:row + 1, :, a:z],
                                   value[row:row + 1, :, a:z], None, dropout=dropout,
                                   scaling=scaling, is_causal=is_causal, **kwargs)
        outs.append(out)  # (1, n, H, dv)
    return torch.cat(outs, 1).view(b, t, *outs[0].shape[2:])  # (B, T, H, dv)


def check_bounds(bounds: list[int], rows: int, width: int, keys: int) -> list[int]:
    """`bounds` when they cut `rows` rows of `width` tokens into examples, else ValueError."""
    if keys != width:
        raise ValueError(f"varlen attention: {keys} keys for {width} queries; packed rows "
                         "take no cache")
    inside = any(a >= z for a, z in pairwise(bounds))
    crossing = any(z > (a // width + 1) * width for a, z in pairwise(bounds))
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != rows * width or inside or crossing:
        raise ValueError(f"varlen attention: cu_seq_lens {bounds} do not cut {rows} row(s) of "
                         f"{width} tokens into non-empty examples")
    return bounds


def cu_seq_lens(lengths: list[int]) -> torch.Tensor:
    """(N + 1,) int32 example boundaries from N example lengths, in flat token order."""
    bounds = [0]
    for n in lengths:
        bounds.append(bounds[-1] + n)
    return torch.tensor(bounds, dtype=torch.int32)


def varlen_inputs(cu: torch.Tensor, rows: int, width: int) -> dict[str, Any]:
    """The model keywords that run packed rows (rows, width) per example: the boundaries
    (for NAME and flash-attn varlen) and an all-ones padding mask, which makes transformers
    build no mask (without one it would see the restarting position ids and build a dense
    block mask)."""
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest,
            "max_length_k": longest,
            "attention_mask": torch.ones(rows, width, dtype=torch.long, device=cu.device)}


def block_mask(cu: torch.Tensor, rows: int, width: int, causal: bool) -> torch.Tensor:
    """The dense fallback: (rows, 1, W, W) boolean, True where a query may attend (its own
    example; and, if causal, not later tokens)."""
    lengths = (cu[1:] - cu[:-1]).long()
    doc = torch.repeat_interleave(torch.arange(len(lengths), device=cu.device),
                                  lengths).view(rows, width)  # (R, W)
    allowed = doc[:, None, :, None] == doc[:, None, None, :]  # (R, 1, W, W)
    if causal:
        allowed &= torch.ones(width, width, dtype=torch.bool, device=cu.device).tril()
    return allowed


def varlen_blocker(model: nn.Module) -> str | None:
    """Why `model` cannot run packed rows per example (so packing falls back to a dense
    mask), or None when it can."""
    base = model.base_model if isinstance(model, PreTrainedModel) else model
    if not getattr(base, "_supports_attention_backend", False):
        return (f"{type(base).__name__} does not run its attention through transformers' "
                "AttentionInterface")
    impl = model.config._attn_implementation
    if impl not in (*SWITCHABLE, NAME, *NATIVE):
        return f"attention '{impl}' does not read example boundaries"
    return None


def use_varlen_attention(model: nn.Module) -> str:
    """Switch every transformers model in `model` that runs SDPA to NAME; returns the
    implementation `model` now runs (NAME, or a flash-attn one that reads the boundaries
    itself). Nothing saved changes: transformers writes no implementation to config.json."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.config._attn_implementation in SWITCHABLE:
            module.set_attn_implementation(NAME)
    return model.config._attn_implementation


def runs_varlen(model: nn.Module) -> bool:
    """Whether `model` now reads example boundaries (so packed rows need no mask)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in (NAME, *NATIVE)


AttentionInterface.register(NAME, varlen_attention)
AttentionMaskInterface.register(NAME, sdpa_mask)  # padded batches: the masks SDPA reads
