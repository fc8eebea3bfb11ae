"""Raw text in, answers out, for a trained encoder run: labels with probabilities
(classification) and entities with character spans (NER).

`tunelab predict` prints these and `tunelab serve` returns them as JSON, so both give the
same answers. Texts go through in batches of similar length (sorted by tokens), so a
thousand texts never pad to one huge tensor; each answer comes back in input order.
Inputs longer than the run's model.max_length are truncated, as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunelab.data.batching import plan_batches
from tunelab.data.conll import Sentence
from tunelab.data.subwords import collate_tokens
from tunelab.errors import DataError
from tunelab.tasks.token_classification import (
    Entity,
    TokenClassificationTask,
    entities,
    split_words,
)

CLASSIFY_BATCH = 32
NER_BATCH = 64  # what `tunelab predict` always used for NER

# (label, its probability, every label's probability)
Classified = tuple[str, float, dict[str, float]]


@dataclass
class EntityPredictions:
    entities: list[list[Entity]]  # per text, in text order
    scores: list[list[float]]  # per entity: the mean probability of its words' predicted tags
    lost_words: int  # words beyond max_length: not tagged (predicted O)


def length_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index lists of examples of similar length, so little compute goes to padding."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def split_pairs(info: dict[str, Any], texts: list[str]) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts or None). A run trained on (text, text_pair) reads each
    input as "first<TAB>second"."""
    if not info.get("text_pair"):
        return texts, None
    bad = [t for t in texts if "\t" not in t]
    if bad:
        raise DataError(f"this run classifies text pairs; separate the two texts with a tab "
                        f"(got {bad[0]!r})")
    firsts, seconds = zip(*(t.split("\t", 1) for t in texts))
    return list(firsts), list(seconds)


@torch.inference_mode()
def classify(model: nn.Module, tokenizer, info: dict[str, Any], texts: list[str],
             batch_size: int = CLASSIFY_BATCH) -> list[Classified]:
    """(label, probability, probabilities by label) per text of a classification run."""
    firsts, pairs = split_pairs(info, texts)
    lengths = [len(ids) for ids in tokenizer(firsts, pairs, truncation=True,
                                             max_length=info["max_length"])["input_ids"]]
    device = _device(model)
    labels = info["labels"]
    out: list[Classified | None] = [None] * len(texts)
    for index in length_batches(lengths, batch_size):
        batch = tokenizer([firsts[i] for i in index],
                          [pairs[i] for i in index] if pairs is not None else None,
                          truncation=True, max_length=info["max_length"], padding=True,
                          return_tensors="pt")
        probs = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().softmax(-1)
        for i, row in zip(index, probs.cpu().tolist()):
            k = max(range(len(row)), key=row.__getitem__)
            out[i] = (labels[k], row[k], dict(zip(labels, row)))
    return out  # type: ignore[return-value]  # every slot filled


@torch.inference_mode()
def extract_entities(model: nn.Module, tokenizer, info: dict[str, Any], texts: list[str],
                     batch_size: int = NER_BATCH) -> EntityPredictions:
    """Entities per text of a token-classification run: the text split into words as CoNLL
    files are, each word tagged by its first sub-token, IOB2 spans back to characters."""
    task = TokenClassificationTask.from_run_info(tokenizer, info)
    split = [split_words(t) for t in texts]
    empty = [t for t, w in zip(texts, split) if not w]
    if empty:
        raise DataError(f"no words in {empty[0]!r}; give text with at least one word")
    sentences = [Sentence(tuple(w for w, _, _ in words), ("O",) * len(words), "<text>", 1)
                 for words in split]
    data = task.encode(tokenizer, sentences)
    device = _device(model)
    tags: list[list[int]] = [[] for _ in texts]
    probs: list[list[float]] = [[] for _ in texts]
    # the batches `TokenClassificationTask.predict` forms, so tags match it exactly
    for index in plan_batches(data.lengths(), batch_size, seed=0, epoch=0, bucket=True):
        batch = collate_tokens(data, index, task.pad_id)
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()
        for row, i in enumerate(index):
            tags[i], probs[i] = _word_tags(logits[row], data.word_ids[i], len(split[i]),
                                           task.index["O"])
    found, scores = [], []
    for text, words, ids, p in zip(texts, split, tags, probs):
        spans = entities(text, words, [task.tags[k] for k in ids])
        found.append(spans)
        scores.append([sum(p[a:b]) / (b - a) for a, b in (e.words for e in spans)])
    return EntityPredictions(found, scores, data.lost_words)


def _word_tags(logits: torch.Tensor, word_ids: list[int | None], n_words: int,
               missing: int) -> tuple[list[int], list[float]]:
    """Per word: the tag id its first sub-token predicts and that tag's probability. A word
    with no sub-token (cut at max_length) gets `missing` (O), probability 1."""
    first = [-1] * n_words
    for pos, w in enumerate(word_ids):
        if w is not None and first[w] == -1:
            first[w] = pos
    preds = logits.argmax(-1).tolist()
    probs = logits.softmax(-1)
    ids = [missing if pos == -1 else preds[pos] for pos in first]
    return ids, [1.0 if pos == -1 else float(probs[pos, k]) for pos, k in zip(first, ids)]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
