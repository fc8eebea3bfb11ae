"""The augmentation operations on a list of words, each at its own per-word rate.

EDA (Wei & Zou, 2019) changes round(alpha * n) words per operation; here every word draws
for itself (a Bernoulli trial at the rate), so a rate is exactly the expected share of
words touched and can be checked on a large sample. A short sentence may come out
unchanged. Negations are never deleted, replaced or masked (words.is_protected).
"""

from __future__ import annotations

import random
from typing import Callable

from tunelab.data.augment.words import is_protected

Synonyms = Callable[[str], tuple[str, ...]]


def synonym_replacement(words: list[str], rate: float, rng: random.Random, synonyms: Synonyms
                        ) -> list[str]:
    """Each word that has a synonym (stopwords and negations have none) is replaced by one
    of them with probability `rate`."""
    out = []
    for w in words:
        options = () if is_protected(w) else synonyms(w)
        out.append(rng.choice(options) if options and rng.random() < rate else w)
    return out


def random_insertion(words: list[str], rate: float, rng: random.Random, synonyms: Synonyms
                     ) -> list[str]:
    """For each word, with probability `rate`, a synonym of a random word of the sentence
    goes in at a random position (nothing is inserted if no word has a synonym)."""
    donors = [w for w in words if not is_protected(w) and synonyms(w)]
    if not donors:
        return list(words)
    inserts = sum(rng.random() < rate for _ in words)
    out = list(words)
    for _ in range(inserts):
        out.insert(rng.randint(0, len(out)), rng.choice(synonyms(rng.choice(donors))))
    return out


def random_swap(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """Swaps of two random positions: each word adds one swap with probability `rate`."""
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(sum(rng.random() < rate for _ in words)):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], rate: float, rng: random.Random) -> list[str]:
    """Each word except negations is deleted with probability `rate`; one word always stays."""
    out = [w for w in words if is_protected(w) or rng.random() >= rate]
    return (out or [rng.choice(words)]) if words else []


def mask(words: list[str], rate: float, rng: random.Random, token: str) -> list[str]:
    """Each word except negations becomes the tokenizer's mask token with probability `rate`."""
    return [token if not is_protected(w) and rng.random() < rate else w for w in words]
