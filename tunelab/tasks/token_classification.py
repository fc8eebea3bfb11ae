"""Token classification (NER): encoding tagged sentences, the loss, predicting and scoring.

The loss is cross-entropy over labelled sub-tokens (a word's first, or all of them), each
weighing the same across the epoch (see `units`); predictions and scores are per word (first
sub-token), entity-level by seqeval.
"""

from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data.batching import plan_batches
from tunelab.data.conll import Sentence
from tunelab.data.subwords import (
    IGNORE,
    TokenEncoded,
    collate_tokens,
    encode_words,
    word_predictions,
)
from tunelab.tasks.base import Task
from tunelab.tasks.metrics import ner_metrics


@dataclass
class TagPredictions:
    tags: list[list[str]]  # per sentence, per word, IOB2
    loss: float  # mean per labelled sub-token


@dataclass(frozen=True)
class Entity:
    type: str
    text: str
    start: int  # character offsets in the input text, end exclusive
    end: int
    words: tuple[int, int]  # word span, end exclusive


class TokenClassificationTask(Task):
    name = "token_classification"
    default_metric = "f1"

    def __init__(self, tags: list[str], max_length: int, pad_id: int, label_all_subtokens: bool):
        self.tags = tags
        self.index = {tag: i for i, tag in enumerate(tags)}
        self.max_length = max_length
        self.pad_id = pad_id
        self.label_all = label_all_subtokens

    @classmethod
    def from_run_info(cls, tokenizer, info: dict[str, Any]) -> "TokenClassificationTask":
        """The task of a trained run, from its run.json."""
        return cls(info["labels"], info["max_length"], tokenizer.pad_token_id,
                   info.get("label_all_subtokens", False))

    def encode(self, tokenizer, sentences: list[Sentence]) -> TokenEncoded:
        return encode_words(tokenizer, [list(s.words) for s in sentences],
                            [list(s.tags) for s in sentences], self.index, self.max_length,
                            self.label_all)

    def collate(self, data: TokenEncoded, index: list[int]) -> dict[str, torch.Tensor]:
        return collate_tokens(data, index, self.pad_id)

    @staticmethod
    def units(data: TokenEncoded, index: list[int]) -> float:
        """The labelled sub-tokens a batch of these sentences holds on average: the step's loss
        sum is divided by it, so every labelled sub-token weighs the same across the epoch.

        Dividing by the batch's own count (a per-batch token mean, as transformers does) gives
        each token in a length-bucketed batch of two-word headlines some 20x the weight of one
        in a batch of long sentences: on CoNLL-2003 (MiniLM + LoRA, one pass) that cost 1.4 and
        2.0 test entity-F1 points over two seeds. With random batches the two agree."""
        return len(index) * data.mean_trained

    @staticmethod
    def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, n_tags) float logits; batch["labels"] is IGNORE where no tag is trained."""
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "example_ids")}
        return model(**inputs).logits.float()  # (B, T, n_tags)

    @staticmethod
    def loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed cross-entropy over labelled sub-tokens, so accumulation can divide by the
        step's labelled-token count."""
        logits = TokenClassificationTask.logits(model, batch)
        return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                               ignore_index=IGNORE, reduction="sum")

    @torch.no_grad()
    def predict(self, model: nn.Module, data: TokenEncoded, batch_size: int, device: torch.device,
                autocast: torch.autocast | None = None) -> TagPredictions:
        was_training = model.training
        model.eval()
        tags: list[list[str]] = [[] for _ in range(len(data))]
        loss, units = 0.0, 0
        for index in plan_batches(data.lengths(), batch_size, seed=0, epoch=0, bucket=True):
            batch = {k: v.to(device) for k, v in self.collate(data, index).items()}
            with autocast or nullcontext():
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
            loss += F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(),
                                    ignore_index=IGNORE, reduction="sum").item()
            units += sum(data.trained[i] for i in index)
            preds = logits.argmax(-1).cpu().tolist()  # (B, T)
            for row, i in enumerate(index):
                words = word_predictions(preds[row], data.word_ids[i], len(data.gold[i]),
                                         missing=self.index["O"])
                tags[i] = [self.tags[k] for k in words]
        model.train(was_training)
        return TagPredictions(tags, loss / max(units, 1))

    def evaluate(self, model: nn.Module, data: TokenEncoded, batch_size: int, device: torch.device,
                 autocast: torch.autocast | None = None) -> dict:
        pred = self.predict(model, data, batch_size, device, autocast)
        return {"loss": pred.loss, **ner_metrics(data.gold, pred.tags)}


# ----------------------------------------------------------------------------- raw text

# A word: a run of letters/digits that may hold inner . ' - & (U.S., O'Neil, 1996-08-22), an
# abbreviation's final dot included when it has inner dots; or one other visible character.
_WORD = re.compile(r"\w+(?:[.'’&-]\w+)*(?:(?<=\w\.\w)\.)?|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) for raw text, split the way CoNLL files are: at whitespace, with
    punctuation as words of its own."""
    return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]


def entities(text: str, words: list[tuple[str, int, int]], tags: list[str]) -> list[Entity]:
    """Entity spans in `text` from per-word IOB2 tags (seqeval's rules: I-X after O opens one)."""
    from seqeval.metrics.sequence_labeling import get_entities

    out = []
    for kind, first, last in get_entities(list(tags)):
        start, end = words[first][1], words[last][2]
        out.append(Entity(kind, text[start:end], start, end, (first, last + 1)))
    return out
