"""Few-shot episodes drawn from source classification sets.

An episode picks a source, `n_way` of its labels in a random order (so no class index means
the same label twice: the head cannot memorise), and `k_shot` support plus `query_shot` query
examples per class. Everything is a function of (seed, episode number).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tunelab.config import DataConfig
from tunelab.data import load_splits
from tunelab.data.batching import Encoded
from tunelab.errors import DataError


@dataclass
class Pool:
    name: str
    by_label: dict[str, list[list[int]]]  # token ids of each training example, per label


@dataclass
class Episode:
    source: str
    classes: list[str]  # the episode's class i is the source's label classes[i]
    support: Encoded
    query: Encoded


def build_pools(sources: list[DataConfig], tokenizer, max_length: int, n_way: int,
                per_class: int) -> list[Pool]:
    """Tokenised training examples of each source, grouped by label. Labels with fewer than
    `per_class` examples are left out; a source left with fewer than n_way labels is an error."""
    pools = []
    for src in sources:
        splits = load_splits(src)
        texts = [e.text for e in splits.train]
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        by_label: dict[str, list[list[int]]] = {}
        for example, seq in zip(splits.train, ids):
            by_label.setdefault(example.label, []).append(seq)
        kept = {label: seqs for label, seqs in by_label.items() if len(seqs) >= per_class}
        if len(kept) < n_way:
            raise DataError(f"{src.train}: {len(kept)} labels have {per_class} or more training "
                            f"examples (meta.k_shot + meta.query_shot); an episode needs "
                            f"meta.n_way = {n_way}")
        pools.append(Pool(src.train, kept))
    return pools


def sample_episode(pools: list[Pool], n_way: int, k_shot: int, query_shot: int, seed: int,
                   episode: int) -> Episode:
    rng = random.Random(seed * 1_000_003 + episode)
    pool = pools[rng.randrange(len(pools))]
    classes = rng.sample(sorted(pool.by_label), n_way)
    support: list[tuple[list[int], int]] = []
    query: list[tuple[list[int], int]] = []
    for i, label in enumerate(classes):
        picks = rng.sample(pool.by_label[label], k_shot + query_shot)
        support += [(seq, i) for seq in picks[:k_shot]]
        query += [(seq, i) for seq in picks[k_shot:]]
    return Episode(pool.name, classes, _encoded(support), _encoded(query))


def _encoded(items: list[tuple[list[int], int]]) -> Encoded:
    return Encoded([seq for seq, _ in items], None, [label for _, label in items])
