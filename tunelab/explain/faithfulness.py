"""Faithfulness, measured: does erasing the words an explanation ranks highest change the
prediction more than erasing words at random?

For one input x, its predicted label y and word ranking r (highest score first), with
p(.) the probability of y and x\\k the input with the top k% of words erased (their
sub-tokens dropped, special tokens kept), as in ERASER (DeYoung et al. 2020):

  comprehensiveness = mean over k in BINS of  p(x) - p(x \\ top k%)      higher is better
  sufficiency       = mean over k in BINS of  p(x) - p(top k% only)     lower is better
  deletion AOPC     = mean over f in 0, .1, ..., 1 of p(x) - p(x \\ top f)  higher is better
                      (p(x) minus the area under the deletion curve)

The same numbers for a random ranking (seeded) are the baseline every method must beat.
All erased variants of one input go through the model in one padded batch.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

import torch
from torch import nn

from tunelab.explain.attribute import Target, attribute, class_target
from tunelab.explain.encode import Encoded, encode_text
from tunelab.explain.words import word_scores
from tunelab.tasks.inference import classify

BINS = (0.01, 0.05, 0.10, 0.20, 0.50)  # ERASER's AOPC bins
DELETION = tuple(i / 10 for i in range(11))  # fractions of words erased on the deletion curve
RANDOM = "random"


@dataclass
class Faithfulness:
    comprehensiveness: float
    sufficiency: float
    deletion_aopc: float
    curve: list[float] = field(default_factory=list)  # p(y) at each DELETION fraction


def top(order: list[int], fraction: float) -> set[int]:
    """The first ceil(fraction * n) words of a ranking (at least one when fraction > 0)."""
    return set(order[:math.ceil(fraction * len(order) - 1e-9)])


@torch.no_grad()
def batch_scores(model: nn.Module, enc: Encoded, target: Target,
                 rows: list[tuple[list[int], list[int] | None]]) -> list[float]:
    """The target's score on each (ids, token types) row, right-padded into one batch."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    types = torch.zeros(len(rows), width, dtype=torch.long)
    for r, (row, row_types) in enumerate(rows):
        ids[r, :len(row)] = torch.tensor(row)
        mask[r, :len(row)] = 1
        if row_types is not None:
            types[r, :len(row)] = torch.tensor(row_types)
    extra = {"token_type_ids": types} if enc.token_type_ids is not None else {}
    logits = model(input_ids=ids, attention_mask=mask, **extra).logits.float()
    return target.score(logits).tolist()


def faithfulness(model: nn.Module, enc: Encoded, target: Target, scores: list[float]
                 ) -> Faithfulness:
    """The three numbers for one input and one word ranking (`scores`: (W,), per word)."""
    n = len(enc.words)
    order = sorted(range(n), key=lambda k: -scores[k])
    everything = set(range(n))
    rows = [enc.keep_words(everything)]
    rows += [enc.keep_words(everything - top(order, k)) for k in BINS]
    rows += [enc.keep_words(top(order, k)) for k in BINS]
    rows += [enc.keep_words(everything - top(order, f)) for f in DELETION]
    p = batch_scores(model, enc, target, rows)
    full, b = p[0], len(BINS)
    without, only, curve = p[1:1 + b], p[1 + b:1 + 2 * b], p[1 + 2 * b:]
    return Faithfulness(mean(full - q for q in without), mean(full - q for q in only),
                        mean(full - q for q in curve), curve)


def random_scores(n: int, rng: random.Random) -> list[float]:
    return [rng.random() for _ in range(n)]


def faithfulness_table(model: nn.Module, tokenizer, info: dict[str, Any], texts: list[str],
                       methods: list[str], steps: int = 50, baseline_id: int = 0,
                       seed: int = 0) -> dict[str, dict[str, float]]:
    """Per method (and RANDOM): mean comprehensiveness, sufficiency and deletion AOPC over
    `texts`, each explaining its predicted label; seconds per explanation (mean, p90:
    attribution and word sums, not the erasure passes); IG's mean and
    max completeness error |sum(attributions) - (F(x) - F(baseline))|."""
    rng = random.Random(seed)
    predicted = classify(model, tokenizer, info, texts)
    labels = [str(x) for x in info["labels"]]
    rows: dict[str, list[Faithfulness]] = {m: [] for m in [*methods, RANDOM]}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    errors: list[float] = []
    for text, (label, _, _) in zip(texts, predicted):
        enc = encode_text(tokenizer, info, text)
        target = class_target(labels.index(label), f"label {label}")
        for method in methods:
            t0 = time.perf_counter()
            attr = attribute(model, enc, target, method, steps, baseline_id)
            scores = word_scores(enc, attr.tokens)
            seconds[method].append(time.perf_counter() - t0)
            if attr.delta is not None:
                errors.append(abs(attr.delta))
            rows[method].append(faithfulness(model, enc, target, scores))
        rows[RANDOM].append(faithfulness(model, enc, target, random_scores(len(enc.words), rng)))
    table = {}
    for method, found in rows.items():
        table[method] = {"comprehensiveness": mean(f.comprehensiveness for f in found),
                         "sufficiency": mean(f.sufficiency for f in found),
                         "deletion_aopc": mean(f.deletion_aopc for f in found),
                         "n": float(len(found))}
        if method in seconds:
            ordered = sorted(seconds[method])
            table[method]["seconds"] = mean(ordered)
            table[method]["seconds_p90"] = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        if method == "ig" and errors:
            table[method]["completeness_error"] = mean(errors)
            table[method]["completeness_error_max"] = max(errors)
    return table
