"""Augmented copies of one example: a pure function of (seed, epoch, example index, copy).

Every copy has its own random stream, seeded by a string of those four numbers, so a copy
does not depend on the order examples are visited, on other copies, or on torch's RNG;
that is what keeps `--resume` exact and a materialised file reproducible. Only the text
changes: a copy carries its original's label and text_pair, so labels are kept by
construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Callable

from tunelab.config.augment import AugmentConfig
from tunelab.data.augment import operations as ops
from tunelab.data.augment.words import join_words, language_of, split_words
from tunelab.data.readers import Example
from tunelab.errors import ConfigError

ORDER = ("synonym_replacement", "random_insertion", "random_swap", "random_deletion", "mask")


@dataclass(frozen=True)
class Copy:
    example: Example  # the augmented text, the original's label
    origin: int  # index of the original in the training set
    source: str  # "eda" or "back_translation"
    ops: tuple[str, ...]  # operations applied, in order


class Augmenter:
    def __init__(self, cfg: AugmentConfig, synonyms: Callable[[str], tuple[str, ...]],
                 mask_token: str | None):
        if cfg.ops.mask > 0 and not mask_token:
            raise ConfigError("data.augment.ops.mask: the model's tokenizer has no mask token; "
                              "set mask to 0 or use a model with one (BERT-style encoders)")
        self.cfg, self.synonyms, self.mask_token = cfg, synonyms, mask_token
        self.enabled = [op for op in ORDER if getattr(cfg.ops, op) > 0]

    def rng(self, epoch: int, index: int, copy: int) -> random.Random:
        e = epoch if self.cfg.per_epoch else 0
        return random.Random(f"tunelab-augment:{self.cfg.seed}:{e}:{index}:{copy}")

    def apply(self, words: list[str], op: str, rng: random.Random) -> list[str]:
        rate = getattr(self.cfg.ops, op)
        if op == "synonym_replacement":
            return ops.synonym_replacement(words, rate, rng, self.synonyms)
        if op == "random_insertion":
            return ops.random_insertion(words, rate, rng, self.synonyms)
        if op == "random_swap":
            return ops.random_swap(words, rate, rng)
        if op == "random_deletion":
            return ops.random_deletion(words, rate, rng)
        return ops.mask(words, rate, rng, self.mask_token or "")

    def text(self, text: str, rng: random.Random) -> tuple[str, tuple[str, ...]]:
        """(augmented text, the operations applied): one picked at random, or all in turn."""
        chosen = [rng.choice(self.enabled)] if self.cfg.combine == "one" else self.enabled
        lang = language_of(text, self.cfg.language)
        words = split_words(text, lang)
        for op in chosen:
            words = self.apply(words, op, rng)
        return join_words(words, lang), tuple(chosen)

    def copies(self, example: Example, index: int, epoch: int) -> list[Copy]:
        out = []
        for k in range(self.cfg.copies):
            text, applied = self.text(example.text, self.rng(epoch, index, k))
            out.append(Copy(replace(example, text=text, where=f"{example.where} (copy {k + 1})"),
                            index, "eda", applied))
        return out

    def words_of(self, examples: list[Example]) -> set[str]:
        """Every word of the examples' texts: the words whose synonyms may be asked for."""
        return {w for e in examples for w in split_words(e.text, language_of(e.text,
                                                                              self.cfg.language))}
