"""The accuracy matrix of a continual run and the numbers read off it.

R[i][j] is the score on stage j's dev set after training stage i (0-based); `baseline[j]` is
stage j's score before any stage trained (the pretrained encoder with the freshly initialised,
seeded head), the "random initialisation" b_j of Lopez-Paz & Ranzato (2017, GEM). With T stages:

  ACC = 1/T sum_j R[T-1][j]                          (average score at the end)
  BWT = 1/(T-1) sum_{j<T-1} (R[T-1][j] - R[j][j])     (backward transfer; < 0 is forgetting)
  FWT = 1/(T-1) sum_{j>0} (R[j-1][j] - baseline[j])  (forward transfer: what the stages before
                                                      j did for j before j trained)
  forgetting = 1/(T-1) sum_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])   (Chaudhry et al. 2018)

BWT, FWT and forgetting are None with one stage (nothing to measure).
"""

from __future__ import annotations

from typing import Any

from tunelab.errors import ConfigError


def _check(r: list[list[float]]) -> int:
    t = len(r)
    if t == 0 or any(len(row) != t for row in r):
        raise ConfigError(f"accuracy matrix: needs T rows of T scores, got rows of "
                          f"{[len(row) for row in r]}; score every stage after every stage")
    return t


def average_accuracy(r: list[list[float]]) -> float:
    t = _check(r)
    return sum(r[t - 1]) / t


def backward_transfer(r: list[list[float]]) -> float | None:
    t = _check(r)
    if t < 2:
        return None
    return sum(r[t - 1][j] - r[j][j] for j in range(t - 1)) / (t - 1)


def forward_transfer(r: list[list[float]], baseline: list[float]) -> float | None:
    t = _check(r)
    if len(baseline) != t:
        raise ConfigError(f"accuracy matrix: {len(baseline)} baseline scores for {t} stages")
    if t < 2:
        return None
    return sum(r[j - 1][j] - baseline[j] for j in range(1, t)) / (t - 1)


def forgetting(r: list[list[float]]) -> float | None:
    t = _check(r)
    if t < 2:
        return None
    return sum(max(r[l][j] for l in range(j, t - 1)) - r[t - 1][j]
               for j in range(t - 1)) / (t - 1)


def summary(r: list[list[float]], baseline: list[float]) -> dict[str, Any]:
    """Everything read off the matrix, for metrics.jsonl, summary.json and the report."""
    return {"matrix": r, "baseline": baseline, "average_accuracy": average_accuracy(r),
            "bwt": backward_transfer(r), "fwt": forward_transfer(r, baseline),
            "forgetting": forgetting(r)}


def partial(rows: list[list[float]]) -> dict[str, float | None]:
    """After stage i (rows 0..i): average accuracy and BWT over the stages seen so far."""
    i = len(rows) - 1
    seen = [row[:i + 1] for row in rows]
    return {"average_accuracy": average_accuracy(seen), "bwt": backward_transfer(seen)}
