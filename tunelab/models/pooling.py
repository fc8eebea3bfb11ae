"""What a sequence classifier's head reads: `model.pooling: mean` swaps BERT's pooler for the
average of the last layer's vectors over real tokens.

Why: sentence-transformers checkpoints (all-MiniLM-L6-v2 among them) were trained to be read
by a mean over tokens; their pooler (dense + tanh over the first token) was never trained
for it. On SST-2 a logistic regression on frozen MiniLM features scores 0.79 on mean-pooled
vectors and 0.68-0.71 on the pooler's, and a run whose gradients are noised (DP-SGD) has to
learn its head from those features almost alone.

The pooler module is replaced in place (BertModel calls `self.pooler(sequence_output)`), so
the model stays the transformers class that methods, Opacus, saving and export know; the
attention mask reaches it through a forward pre-hook on the base model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunelab.errors import ModelError


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The average of the (B, T, H) states over the tokens whose mask is 1: (B, H)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


class MeanPooler(nn.Module):
    """Stands in for BERT's pooler. `mask` is set by the base model's pre-hook before every
    forward (see `use_mean_pooling`); it has no weights, so nothing new trains or saves.
    `reads_every_token` turns off the first-token cut (tunelab.kernels.first_token)."""

    reads_every_token = True

    def __init__(self) -> None:
        super().__init__()
        self.mask: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, H)
        if self.mask is None or self.mask.shape != hidden.shape[:2]:
            raise ModelError("mean pooling got no attention mask for this batch; call the "
                             "task model itself, not its pooler")
        return masked_mean(hidden, self.mask)


def _mask_hook(base: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Give the base's pooler this call's attention mask (all ones when none is passed)."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if mask is None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
        device = (ids if ids is not None else kwargs["inputs_embeds"]).device
        mask = torch.ones(shape, dtype=torch.long, device=device)
    base.pooler.mask = mask  # the base's pooler now: a multitask model may share one


def use_mean_pooling(model: nn.Module) -> None:
    """Make a sequence classifier read the masked mean of its last layer (see the module
    docstring); a ModelError for an architecture whose head does not read a pooler."""
    base = getattr(model, "base_model", None)
    pooler = getattr(base, "pooler", None) if base is not model else None
    # BERT's pooler takes the whole (B, T, H) sequence; ALBERT's is a bare Linear on token 0
    if not isinstance(pooler, nn.Module) or isinstance(pooler, nn.Linear):
        raise ModelError(f"model.pooling: mean needs a BERT-style encoder whose pooler reads "
                         f"the whole sequence (BERT, MiniLM); {type(model).__name__} has "
                         "none. Remove model.pooling to use the model's own head")
    base.pooler = MeanPooler()
    base.register_forward_pre_hook(_mask_hook, with_kwargs=True)
