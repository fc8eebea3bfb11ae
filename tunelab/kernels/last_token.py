"""Decoder classifiers read each example's last real token, in padded and in packed rows.

transformers' sequence classifiers for causal LMs (Llama, Qwen2, Mistral, Gemma, GPT-2, ...)
put a fresh `score` Linear on every position and keep, per row, the rightmost token that is
not the pad id: right and left padding both pool the last real token (the model config must
hold the pad id; tunelab.models.load_classifier sets it, the EOS id for tokenizers without a
pad token). A padded batch needs nothing more.

A packed row (tunelab.data.packing with causal=True) holds several examples, each restarting
its position ids and attending causally within itself. There the rightmost-non-pad rule would
find one token per row, so the packed forward runs the backbone and applies the score head to
the hidden state at each example's last real token (`lasts`, flat positions row * W + offset):
the same hidden state, hence the same logits, as the padded forward pools.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from tunelab.kernels.dropout_attention import NAME as TUNELAB_ATTENTION


def reads_last_token(model: nn.Module) -> bool:
    """A transformers sequence classifier over a causal LM: its head is `score`, read at the
    last non-pad token (encoders name theirs `classifier`; BART/T5 `classification_head`)."""
    return (type(model).__name__.endswith("ForSequenceClassification")
            and isinstance(getattr(model, "score", None), nn.Module)
            and not getattr(model.config, "is_encoder_decoder", False))


def last_token_blocker(model: nn.Module) -> str | None:
    """Why decoder classifier `model` cannot train on packed rows, or None when it can.
    (Gradient checkpointing is no obstacle: nothing is cut from the last layer.)"""
    if hasattr(model.base_model, "prompt_encoder"):  # tunelab.methods.virtual
        return "the method prepends virtual tokens to every row"
    if "position_ids" not in inspect.signature(model.base_model.forward).parameters:
        return f"{type(model.base_model).__name__} takes no position ids to restart per example"
    impl = model.config._attn_implementation
    if impl not in ("sdpa", TUNELAB_ATTENTION):
        return f"attention '{impl}' does not take a boolean block mask"
    return None


def packed_last_logits(model: nn.Module, inputs: dict[str, torch.Tensor],
                       lasts: torch.Tensor) -> torch.Tensor:
    """(B, n_labels) logits of a packed batch: `inputs` hold input_ids and position_ids (R, W)
    and a causal block attention_mask (R, 1, W, W); `lasts` (B,) the flat position of each
    example's last real token."""
    if not reads_last_token(model):
        raise RuntimeError(f"packed rows with last-token positions: {type(model).__name__} "
                           "is not a decoder classifier")
    hidden = model.base_model(**inputs).last_hidden_state  # (R, W, H)
    return model.score(hidden.flatten(0, 1)[lasts])  # (B, n_labels)


def last_real_positions(input_ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """(B,) the position transformers pools in each padded row of `input_ids` (B, T): the
    rightmost token that is not `pad_id` (0 when a row is all padding; T - 1 without a pad id)."""
    if pad_id is None:
        return torch.full(input_ids.shape[:1], input_ids.shape[1] - 1, dtype=torch.long)
    keep = (input_ids != pad_id).long()
    return (torch.arange(input_ids.shape[1], device=input_ids.device) * keep).argmax(-1)
