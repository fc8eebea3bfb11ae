"""Masked-LM continued pretraining of an encoder: batching with dynamic masks, loss, scoring.

Only the masked positions go through the MLM head (transform + vocabulary projection), so the
(tokens x vocabulary) logits of the unmasked 85% are never computed.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data.batching import plan_batches
from tunelab.data.masking import IGNORE, Masker, MLMEncoded
from tunelab.models.heads import head_modules
from tunelab.tasks.base import Task

EVAL_KEY = "eval"  # held-out masks: the same in every evaluation and every run


def step_key(seed: int, step: int) -> str:
    """The key training step `step` draws its masks from."""
    return f"{seed}:{step}"


def mlm_head(model: nn.Module) -> nn.Module | None:
    """The model's MLM head when it is one module applied to the encoder's output (BERT's
    `cls`, RoBERTa's `lm_head`); None when it is spread over several (then the whole model runs)."""
    heads = head_modules(model)
    return getattr(model, heads[0]) if len(heads) == 1 else None


def masked_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(N, V) logits at the N masked positions of the batch, in label order."""
    keep = batch["labels"] != IGNORE  # (B, T)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    head = mlm_head(model)
    if head is None:
        return model(**inputs).logits[keep]
    hidden = model.base_model(**inputs).last_hidden_state  # (B, T, H)
    return head(hidden[keep])  # (N, V)


class MaskedLMTask(Task):
    name = "masked_lm"
    default_metric = "loss"

    def __init__(self, masker: Masker, seed: int):
        self.masker, self.seed = masker, seed
        self.step = 0

    def set_step(self, step: int) -> None:
        """The loop calls this before each optimizer step: masks are drawn from (seed, step)."""
        self.step = step

    def collate(self, data: MLMEncoded, index: list[int]) -> dict[str, torch.Tensor]:
        return self.masker.batch(data, index, step_key(self.seed, self.step))

    def units(self, data: MLMEncoded, index: list[int]) -> float:
        """The masked tokens these examples hold on average (rate x maskable tokens): a step's
        loss sum is divided by it, so every masked token weighs the same across the epoch, as
        in CausalLMTask.units."""
        return len(index) * data.mean_maskable * self.masker.rate

    @staticmethod
    def loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = masked_logits(model, batch)
        return F.cross_entropy(logits.float(), batch["labels"][batch["labels"] != IGNORE],
                               reduction="sum")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: MLMEncoded, batch_size: int, device: torch.device,
                 autocast: Any = None) -> dict[str, float]:
        """Held-out loss per masked token, its perplexity, and the share of masked tokens
        predicted right (top-1), on masks drawn with a fixed key."""
        was_training = model.training
        model.eval()
        total, right, n = 0.0, 0, 0
        for index in plan_batches(data.lengths(), batch_size, seed=0, epoch=0, bucket=True):
            batch = {k: v.to(device) for k, v in
                     self.masker.batch(data, index, EVAL_KEY).items()}
            targets = batch["labels"][batch["labels"] != IGNORE]
            with autocast or nullcontext():
                logits = masked_logits(model, batch).float()
            total += F.cross_entropy(logits, targets, reduction="sum").item()
            right += int((logits.argmax(-1) == targets).sum())
            n += targets.numel()
        model.train(was_training)
        loss = total / max(n, 1)
        return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
                "masked_accuracy": right / max(n, 1), "tokens": n}
