"""Fold index sets for K-fold cross-validation.

Classification folds are stratified (each fold keeps the label shares of the whole); tagged
sentences are grouped by document when their file marks documents, so no document feeds
both the training and the held-out part of a fold. scikit-learn draws the folds, seeded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Sequence

from tunelab.errors import ConfigError, DataError


@dataclass(frozen=True)
class Folds:
    kind: str  # how they were drawn, for the report: "stratified by label", ...
    held_out: list[list[int]]  # per fold, the sorted indices it scores on
    size: int  # examples in the pool

    def train_part(self, k: int) -> list[int]:
        """The indices fold k trains on: every other fold's held-out part."""
        held = set(self.held_out[k])
        return [i for i in range(self.size) if i not in held]


def check_count(folds: int, n: int, what: str) -> None:
    if folds < 2:
        raise ConfigError(f"--folds {folds}: cross-validation needs at least 2 folds")
    if folds > n:
        raise DataError(f"--folds {folds}: only {n} {what} to split; lower --folds")


def stratified_folds(labels: Sequence[Hashable], folds: int, seed: int) -> Folds:
    """Each fold holds out about 1/K of every label's examples."""
    from sklearn.model_selection import StratifiedKFold

    check_count(folds, len(labels), "examples")
    rare = [(label, n) for label, n in Counter(labels).items() if n < folds]
    if rare:
        label, n = min(rare, key=lambda x: x[1])
        raise DataError(f"label {label!r} has {n} example(s), fewer than the {folds} folds, so "
                        "some folds could not hold it out; lower --folds or add examples")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    held = [sorted(test.tolist()) for _, test in splitter.split(list(range(len(labels))), labels)]
    return Folds("stratified by label", held, len(labels))


def grouped_folds(groups: Sequence[Hashable], folds: int, seed: int, what: str) -> Folds:
    """Every group (document) lies wholly in one fold's held-out part. With a single group
    (a file without document marks) the folds split the examples themselves."""
    from sklearn.model_selection import GroupKFold, KFold

    check_count(folds, len(groups), what)
    n_groups = len(set(groups))
    index = list(range(len(groups)))
    if n_groups == 1:
        splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
        held = [sorted(test.tolist()) for _, test in splitter.split(index)]
        return Folds(f"{what} shuffled (no document marks to group by)", held, len(groups))
    if n_groups < folds:
        raise DataError(f"--folds {folds}: the data holds only {n_groups} documents, and folds "
                        "keep documents whole; lower --folds")
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    held = [sorted(test.tolist()) for _, test in splitter.split(index, groups=groups)]
    return Folds(f"grouped by document ({n_groups} documents)", held, len(groups))
