"""Masked-LM examples: texts as token windows with word numbers, and dynamic masking.

Masks are drawn when a batch is built, not once at encoding, so every epoch sees new ones.
Each example's draw is seeded by (seed, step, example index): a resumed run draws exactly
what the uninterrupted one did, and the draw does not depend on which batch, micro-batch or
process the example lands in. Held-out masks use a fixed key, so every evaluation (before
training, after, and in another run) scores the same masked tokens.

The draw: the maskable units are the example's non-special tokens (or, with whole_word,
its words: all sub-tokens of a word share one unit); k = floor(rate * units + u), u uniform in
[0, 1), units are chosen uniformly without replacement. So every token is chosen with
probability exactly `rate`, short texts included (no rounding up to one). Each chosen token
is replaced by the mask token (mask_share), by a random non-special token (random_share) or
kept (the rest): BERT's 80/10/10 rule by default.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from tunelab.data.sft import PlainText
from tunelab.errors import DataError

IGNORE = -100
SPECIAL = -1  # word number of a special token: never masked


@dataclass
class MLMEncoded:
    input_ids: list[list[int]]  # windows of at most model.max_length tokens, specials included
    words: list[list[int]]  # per token: its word number in the window; SPECIAL for specials
    records: list[PlainText] = field(default_factory=list)
    maskable: list[int] = field(init=False)  # non-special tokens per window
    mean_maskable: float = field(init=False)

    def __post_init__(self) -> None:
        self.maskable = [sum(w != SPECIAL for w in words) for words in self.words]
        self.mean_maskable = sum(self.maskable) / max(1, len(self.maskable))

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode_texts(tokenizer, texts: list[PlainText], max_length: int) -> tuple[MLMEncoded, int]:
    """(windows, how many texts were longer than one window). A long text becomes several
    consecutive windows, each with its own special tokens: no token is cut away."""
    if tokenizer.mask_token_id is None:
        raise DataError("task masked_lm: the model's tokenizer has no mask token; use an encoder "
                        "pretrained with one (BERT, RoBERTa, MiniLM...)")
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("task masked_lm needs a fast (Rust) tokenizer for word boundaries; save "
                        "the model with a tokenizer.json")
    special = set(tokenizer.all_special_ids)
    enc = tokenizer([t.text for t in texts], truncation=True, max_length=max_length,
                    return_overflowing_tokens=True, return_special_tokens_mask=True)
    ids, words, records = [], [], []
    for i, window in enumerate(enc["input_ids"]):
        word_ids = enc.word_ids(i)
        marks = enc["special_tokens_mask"][i]
        words.append([SPECIAL if marks[j] or tok in special or word_ids[j] is None else word_ids[j]
                      for j, tok in enumerate(window)])
        ids.append(window)
        records.append(texts[enc["overflow_to_sample_mapping"][i]])
    split = len(ids) - len(texts)
    if not any(n for n in MLMEncoded(ids, words).maskable):
        raise DataError(f"{texts[0].where}: no maskable token in the texts (only special tokens)")
    return MLMEncoded(ids, words, records), split


@dataclass(frozen=True)
class Masker:
    """Draws masks for MLMEncoded examples and pads them into a batch."""

    mask_id: int
    pad_id: int
    random_pool: tuple[int, ...]  # non-special token ids a chosen token may become
    rate: float = 0.15
    whole_word: bool = False
    mask_share: float = 0.8
    random_share: float = 0.1

    @classmethod
    def for_tokenizer(cls, tokenizer, rate: float, whole_word: bool, mask_share: float,
                      random_share: float) -> "Masker":
        special = set(tokenizer.all_special_ids)
        pool = tuple(i for i in range(len(tokenizer)) if i not in special)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        return cls(tokenizer.mask_token_id, pad, pool, rate, whole_word, mask_share, random_share)

    def choose(self, words: list[int], rng: random.Random) -> list[int]:
        """Positions to predict: whole units (tokens, or words), each with probability rate."""
        units: dict[int, list[int]] = {}
        for pos, word in enumerate(words):
            if word != SPECIAL:
                units.setdefault(word if self.whole_word else pos, []).append(pos)
        k = int(self.rate * len(units) + rng.random())
        picked = rng.sample(sorted(units), min(k, len(units)))
        return sorted(pos for u in picked for pos in units[u])

    def mask(self, ids: list[int], words: list[int], rng: random.Random
             ) -> tuple[list[int], list[int]]:
        """(inputs, labels): labels hold the original token at chosen positions, else IGNORE."""
        inputs, labels = list(ids), [IGNORE] * len(ids)
        for pos in self.choose(words, rng):
            labels[pos] = ids[pos]
            r = rng.random()
            if r < self.mask_share:
                inputs[pos] = self.mask_id
            elif r < self.mask_share + self.random_share:
                inputs[pos] = self.random_pool[rng.randrange(len(self.random_pool))]
        return inputs, labels

    def draw(self, data: MLMEncoded, i: int, key: str) -> tuple[list[int], list[int]]:
        """Example i's (inputs, labels) under `key`: the same in whatever batch it lands."""
        return self.mask(data.input_ids[i], data.words[i], random.Random(f"{key}:{i}"))

    def batch(self, data: MLMEncoded, index: list[int], key: str) -> dict[str, torch.Tensor]:
        """Right-padded (B, T) input_ids, attention_mask and labels; example i's draw is seeded
        by (key, i) alone."""
        width = max(len(data.input_ids[i]) for i in index)
        ids = torch.full((len(index), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(index), width), IGNORE, dtype=torch.long)
        attn = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            inputs, targets = self.draw(data, i, key)
            n = len(inputs)
            ids[row, :n] = torch.tensor(inputs)
            labels[row, :n] = torch.tensor(targets)
            attn[row, :n] = 1
        return {"input_ids": ids, "attention_mask": attn, "labels": labels}
