"""Classification forwards that skip the last layer's work the head never reads.

A BERT sequence classifier pools the first token of the last layer and nothing else. So
in the last layer only that token needs the attention-output projection and the
feed-forward block; every other token needs only its keys and values. Cutting the rows to
the first token just before that block gives the same logits and gradients for about 13%
less work in a 6-layer encoder (forward and backward), at any sequence length.

The same cut reads packed batches (tunelab.data.packing), where an example's first token
lies anywhere in its row: there it is not an option but what makes the logits right.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tunelab.kernels.dropout_attention import NAME as TUNELAB_ATTENTION
from tunelab.kernels.last_token import last_token_blocker, reads_last_token

# Task models whose head reads the first token of the last layer and nothing else.
FIRST_TOKEN_HEADS = ("BertForSequenceClassification",)


def last_attention_output(model: nn.Module) -> nn.Module | None:
    """The block after the last layer's attention (BertSelfOutput), or None for models this
    does not apply to, and under gradient checkpointing."""
    if type(model).__name__ not in FIRST_TOKEN_HEADS or reads_every_token(model):
        return None
    if getattr(model, "is_activation_checkpointing", False):
        return None  # the backward pass re-runs the layer after the cut has been lifted
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    return layers[-1].attention.output if layers else None


def reads_every_token(model: nn.Module) -> bool:
    """The head reads the mean of every token (model.pooling: mean, tunelab.models.pooling)."""
    return bool(getattr(getattr(model.base_model, "pooler", None), "reads_every_token", False))


def packing_blocker(model: nn.Module, gradient_checkpointing: bool = False) -> str | None:
    """Why `model` cannot train on packed rows (with gradient checkpointing on, or to be
    turned on), or None when it can. Decoder classifiers read the last token instead
    (tunelab.kernels.last_token)."""
    if reads_last_token(model):
        return last_token_blocker(model)
    if gradient_checkpointing or getattr(model, "is_activation_checkpointing", False):
        return "gradient checkpointing re-runs the last layer without the first-token cut"
    if reads_every_token(model):
        return "model.pooling: mean averages whole rows, and a packed row holds several examples"
    if last_attention_output(model) is None:
        return f"{type(model).__name__} is not a classifier whose head reads the first token alone"
    if hasattr(model.base_model, "prompt_encoder"):  # tunelab.methods.virtual
        return "the method prepends virtual tokens to every row"
    impl = model.config._attn_implementation
    if impl not in ("sdpa", TUNELAB_ATTENTION):
        return f"attention '{impl}' does not take a boolean block mask"
    return None


@contextmanager
def first_token_only(model: nn.Module, firsts: torch.Tensor | None = None) -> Iterator[None]:
    """Within the block, the last layer of `model` finishes only each example's first
    token: its output, and the encoder's, is (B, 1, H). A no-op for other models, which
    cannot read packed rows: `firsts` (B,), the flat positions (row * width + offset) of
    the first tokens of a packed batch, with a model the cut does not fit is an error."""
    block = last_attention_output(model)
    if block is None:
        if firsts is not None:
            raise RuntimeError(f"packed batches: {packing_blocker(model)}")
        yield
        return

    def keep_first(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if firsts is None:  # attention context and residual: (B, 1, H)
            return tuple(a[:, :1] for a in args)
        return tuple(a.flatten(0, 1)[firsts].unsqueeze(1) for a in args)  # (R, W, H) -> (B, 1, H)

    handle = block.register_forward_pre_hook(keep_first)
    try:
        yield
    finally:
        handle.remove()
