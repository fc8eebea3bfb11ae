"""Splits: every example lands on exactly one client, seeded, and Dirichlet skews labels."""

from __future__ import annotations

import random

import pytest

from tunelab.errors import DataError
from tunelab.federate.split import dirichlet_split, iid_split, label_counts


def _labels(n: int, classes: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"c{rng.randrange(classes)}" for _ in range(n)]


@pytest.mark.parametrize("clients", [1, 3, 10])
def test_iid_covers_every_example_once_in_order(clients: int) -> None:
    shards = iid_split(103, clients, seed=4)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(103))
    assert all(s == sorted(s) for s in shards)  # each shard keeps the data's order
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("alpha", [0.1, 0.5, 100.0])
def test_dirichlet_covers_every_example_once_and_is_seeded(alpha: float) -> None:
    labels = _labels(500, 4)
    shards = dirichlet_split(labels, 10, alpha, seed=7)
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(500))
    assert all(len(s) >= 1 for s in shards)
    assert dirichlet_split(labels, 10, alpha, seed=7) == shards
    assert dirichlet_split(labels, 10, alpha, seed=8) != shards


def test_small_alpha_skews_labels_more_than_large() -> None:
    labels = _labels(2000, 2, seed=1)

    def skew(alpha: float) -> float:  # mean |share of c0 - global share| over clients
        counts = label_counts(labels, dirichlet_split(labels, 10, alpha, seed=0))
        glob = labels.count("c0") / len(labels)
        return sum(abs(c.get("c0", 0) / sum(c.values()) - glob) for c in counts) / len(counts)

    assert skew(0.1) > 3 * skew(100.0)
    assert skew(100.0) < 0.05


def test_more_clients_than_examples_names_the_key() -> None:
    with pytest.raises(DataError, match="federated.clients"):
        iid_split(3, 5, seed=0)
    with pytest.raises(DataError, match="federated.clients"):
        dirichlet_split(["a", "b"], 3, 0.5, seed=0)
