"""Sequence classification: how it encodes examples, computes the loss, and scores."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data.batching import Encoded, collate, encode, plan_batches
from tunelab.data.packing import pack
from tunelab.data.readers import Example
from tunelab.errors import ConfigError
from tunelab.kernels.first_token import first_token_only, packing_blocker
from tunelab.kernels.last_token import packed_last_logits, reads_last_token
from tunelab.tasks.base import Task
from tunelab.tasks.metrics import classification_metrics


# batch entries that are not model inputs: targets, packed rows' first (encoders) or last
# (decoders) tokens, example ids
NOT_INPUTS = ("labels", "firsts", "lasts", "example_ids")


@dataclass
class Predictions:
    probs: torch.Tensor  # (N, n_labels)
    loss: float

    @property
    def labels(self) -> list[int]:
        return self.probs.argmax(-1).tolist()


class ClassificationTask(Task):
    name = "classification"
    default_metric = "accuracy"

    def __init__(self, labels: list[str], max_length: int, pad_id: int):
        self.labels = labels
        self.index = {label: i for i, label in enumerate(labels)}
        self.max_length = max_length
        self.pad_id = pad_id
        # training batches random and packed into rows (tunelab.data.packing), not padded:
        # the run turns it on when the model can read them (first_token.packing_blocker)
        self.packing = False
        self.causal = False  # a decoder classifier: packed rows causal, read at the last token

    @classmethod
    def from_run_info(cls, tokenizer, info: dict[str, Any]) -> "ClassificationTask":
        """The task of a trained run, from its run.json."""
        return cls(info["labels"], info["max_length"], tokenizer.pad_token_id)

    def encode(self, tokenizer, examples: list[Example]) -> Encoded:
        pairs = [e.text_pair or "" for e in examples] if examples[0].text_pair is not None else None
        return encode(tokenizer, [e.text for e in examples], pairs,
                      [self.index[e.label] for e in examples], self.max_length)

    def collate(self, data: Encoded, index: list[int]) -> dict[str, torch.Tensor]:
        if self.packing:
            return pack(data, index, self.pad_id, causal=self.causal)
        return collate(data, index, self.pad_id)

    def choose_batches(self, model: nn.Module, cfg: Any, log: Callable[[str], None]) -> None:
        """Packed or padded batches (data.packing: None packs where the model reads packed
        rows, true insists, false never)."""
        asked = cfg.data.packing
        why = packing_blocker(model, cfg.train.gradient_checkpointing) if asked is not False \
            else None
        if asked and why:
            raise ConfigError(f"data.packing: true, but {why}; set data.packing: false "
                              "(padded batches)")
        self.packing = asked is not False and why is None
        self.causal = reads_last_token(model)
        log("batches: random, packed into rows (no padding)" if self.packing else
            "batches: " + ("sorted by length" if cfg.train.bucket_by_length else "random")
            + ", padded" + (f" (not packed: {why})" if why else ""))

    def plan_batches(self, lengths: list[int], batch_size: int, seed: int, epoch: int,
                     bucket: bool) -> list[list[int]]:
        """Packed batches cost no padding at any mix of lengths, so they stay random."""
        return plan_batches(lengths, batch_size, seed, epoch, bucket and not self.packing)

    @staticmethod
    def units(data: Encoded, index: list[int]) -> int:
        """Examples: the loss is a mean per example."""
        return len(index)

    @staticmethod
    def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, n_labels) float logits, examples in the order of batch["labels"]."""
        inputs = {k: v for k, v in batch.items() if k not in NOT_INPUTS}
        if "lasts" in batch:  # a decoder's packed rows: each example's last token
            return packed_last_logits(model, inputs, batch["lasts"]).float()  # (B, n_labels)
        # the head reads one token: the last layer skips the rest (and finds it in packed rows)
        with first_token_only(model, batch.get("firsts")):
            return model(**inputs).logits.float()  # (B, n_labels)

    @staticmethod
    def loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed (not mean) cross-entropy, so accumulation can divide by the step's example count."""
        return F.cross_entropy(ClassificationTask.logits(model, batch), batch["labels"],
                               reduction="sum")

    @torch.no_grad()
    def predict(self, model: nn.Module, data: Encoded, batch_size: int, device: torch.device,
                autocast: torch.autocast | None = None) -> Predictions:
        was_training = model.training
        model.eval()
        probs = torch.empty(len(data), len(self.labels))
        loss = 0.0
        for index in plan_batches(data.lengths(), batch_size, seed=0, epoch=0, bucket=True):
            batch = {k: v.to(device) for k, v in collate(data, index, self.pad_id).items()}
            with autocast or nullcontext(), first_token_only(model):
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            loss += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
            probs[index] = logits.softmax(-1).cpu()
        model.train(was_training)
        return Predictions(probs, loss / max(len(data), 1))

    def evaluate(self, model: nn.Module, data: Encoded, batch_size: int, device: torch.device,
                 autocast: torch.autocast | None = None) -> dict[str, float]:
        pred = self.predict(model, data, batch_size, device, autocast)
        return {"loss": pred.loss, **classification_metrics(pred.labels, data.labels,
                                                            len(self.labels))}
