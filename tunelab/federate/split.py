"""Share a data set out among clients: IID, or non-IID by a Dirichlet over labels.

Every example goes to exactly one client, and each shard keeps the examples in their
original order, so one client with the whole set sees exactly what centralised training
sees. Both splits are pure functions of (labels, clients, seed).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from tunelab.errors import DataError

T = TypeVar("T")
_TRIES = 1000  # Dirichlet redraws before giving up on a split with no empty client


def iid_split(n: int, clients: int, seed: int) -> list[list[int]]:
    """A seeded shuffle cut into `clients` near-equal shards (sizes differ by at most 1)."""
    _check(n, clients, "iid")
    order = np.random.default_rng(seed).permutation(n)
    return [sorted(int(i) for i in part) for part in np.array_split(order, clients)]


def dirichlet_split(labels: list[str], clients: int, alpha: float, seed: int,
                    min_size: int = 1) -> list[list[int]]:
    """Per label, the label's examples go to clients in proportions drawn from
    Dirichlet(alpha, ..., alpha); redrawn until every client holds `min_size` examples."""
    _check(len(labels), clients, "dirichlet")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for _ in range(_TRIES):
        shards: list[list[int]] = [[] for _ in range(clients)]
        for label in sorted(by_label):
            idx = rng.permutation(by_label[label])
            share = rng.dirichlet([alpha] * clients)
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
            for k, part in enumerate(np.split(idx, cuts)):
                shards[k].extend(int(i) for i in part)
        if min(len(s) for s in shards) >= min_size:
            return [sorted(s) for s in shards]
    raise DataError(f"federated.split.alpha: {alpha} left a client with fewer than {min_size} "
                    f"examples in {_TRIES} draws of {len(labels)} examples over {clients} "
                    "clients; raise alpha or use fewer clients")


def split_indices(kind: str, labels: list[str], clients: int, alpha: float,
                  seed: int) -> list[list[int]]:
    """The config's split of a set with these labels (kind files splits dev sets IID)."""
    if kind == "dirichlet":
        return dirichlet_split(labels, clients, alpha, seed)
    return iid_split(len(labels), clients, seed)


def take(items: list[T], index: list[int]) -> list[T]:
    return [items[i] for i in index]


def label_counts(labels: list[str], shards: list[list[int]]) -> list[dict[str, int]]:
    """Per client, how many examples of each label it holds (logged: how skewed the split is)."""
    out = []
    for shard in shards:
        counts: dict[str, int] = {}
        for i in shard:
            counts[labels[i]] = counts.get(labels[i], 0) + 1
        out.append(dict(sorted(counts.items())))
    return out


def _check(n: int, clients: int, kind: str) -> None:
    if n < clients:
        raise DataError(f"federated.clients: {clients} clients but only {n} examples to "
                        f"split ({kind}); use fewer clients or more data")
