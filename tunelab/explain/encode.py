"""One text as the model sees it (sub-token ids) and as the reader sees it (words with
character spans), with the map between the two.

Words are split as `tunelab predict` splits NER input (whitespace, punctuation on its own),
so every explanation is shown on the same words whatever the task. Sub-tokens are mapped to
words through the fast tokenizer's character offsets; special tokens ([CLS], [SEP]) belong
to no word and are never erased by the faithfulness metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from tunelab.errors import DataError, ModelError
from tunelab.tasks.token_classification import split_words

Word = tuple[str, int, int]  # (word, start, end) in the text, end exclusive


@dataclass
class Encoded:
    text: str
    input_ids: list[int]  # (T,)
    token_type_ids: list[int] | None  # (T,) where the model uses segments
    tokens: list[str]
    spans: list[tuple[int, int] | None]  # per sub-token: characters in `text`; None: special
    word_of: list[int | None]  # per sub-token: its word's index; None: special
    words: list[Word]

    def tensors(self, ids: list[int] | None = None, types: list[int] | None = None
                ) -> dict[str, torch.Tensor]:
        """The model's keyword inputs for one row, (1, T)."""
        ids = self.input_ids if ids is None else ids
        out = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids),
                                                                             dtype=torch.long)}
        types = self.token_type_ids if types is None else types
        if types is not None:
            out["token_type_ids"] = torch.tensor([types])
        return out

    def keep_words(self, kept: set[int]) -> tuple[list[int], list[int] | None]:
        """(ids, token types) with only the sub-tokens of `kept` words and the specials: the
        input with the other words erased, as ERASER erases them."""
        index = [i for i, w in enumerate(self.word_of) if w is None or w in kept]
        types = None if self.token_type_ids is None else [self.token_type_ids[i] for i in index]
        return [self.input_ids[i] for i in index], types


def _fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{type(tokenizer).__name__}: explanations need a fast tokenizer "
                         "(character offsets map sub-tokens to words); the model directory "
                         "needs a tokenizer.json")


def _word_index(words: list[Word], start: int, end: int) -> int | None:
    """The word a sub-token's characters fall in (None for a zero-width special token)."""
    if end <= start:
        return None
    for k, (_, a, b) in enumerate(words):
        if a <= start < b:
            return k
    return None


def encode_text(tokenizer, info: dict[str, Any], text: str) -> Encoded:
    """A classification input tokenized exactly as `classify` does (truncated at the run's
    max_length); a text-pair run reads "first<TAB>second", offsets of the second text shifted
    past the tab so spans index the whole string."""
    _fast(tokenizer)
    if not text.strip():
        raise DataError(f"{text!r}: nothing to explain; give text with at least one word")
    first, second = text, None
    if info.get("text_pair"):
        if "\t" not in text:
            raise DataError(f"this run classifies text pairs; separate the two texts with a "
                            f"tab (got {text!r})")
        first, second = text.split("\t", 1)
    enc = tokenizer(first, second, truncation=True, max_length=info["max_length"],
                    return_offsets_mapping=True)
    shift = {0: 0, 1: len(first) + 1}
    words = split_words(text)
    spans: list[tuple[int, int] | None] = []
    for seq, (a, b) in zip(enc.sequence_ids(), enc["offset_mapping"]):
        spans.append(None if seq is None or b <= a else (a + shift[seq], b + shift[seq]))
    return _assemble(tokenizer, text, enc["input_ids"], enc.get("token_type_ids"), spans, words)


def encode_split(tokenizer, info: dict[str, Any], text: str) -> Encoded:
    """A token-classification input tokenized as `extract_entities` does: split into words
    first, each word tokenized on its own."""
    _fast(tokenizer)
    words = split_words(text)
    if not words:
        raise DataError(f"no words in {text!r}; give text with at least one word")
    enc = tokenizer([w for w, _, _ in words], is_split_into_words=True, truncation=True,
                    max_length=info["max_length"], return_offsets_mapping=True)
    spans: list[tuple[int, int] | None] = []
    for w, (a, b) in zip(enc.word_ids(), enc["offset_mapping"]):
        spans.append(None if w is None else (words[w][1] + a, words[w][1] + b))
    return _assemble(tokenizer, text, enc["input_ids"], enc.get("token_type_ids"), spans, words)


def encode_prompt(tokenizer, text: str) -> Encoded:
    """A causal-LM prompt: the raw text's sub-tokens (with the tokenizer's own BOS, if any)."""
    _fast(tokenizer)
    if not text.strip():
        raise DataError(f"{text!r}: nothing to explain; give a prompt with at least one word")
    enc = tokenizer(text, return_offsets_mapping=True)
    specials = set(tokenizer.all_special_ids)
    spans = [None if i in specials or b <= a else (a, b)
             for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])]
    return _assemble(tokenizer, text, enc["input_ids"], None, spans, split_words(text))


def _assemble(tokenizer, text: str, ids: list[int], types: list[int] | None,
              spans: list[tuple[int, int] | None], words: list[Word]) -> Encoded:
    word_of = [None if s is None else _word_index(words, s[0], s[1]) for s in spans]
    # a sub-token starting inside whitespace (a leading-space BPE piece) takes the next word
    for i, s in enumerate(spans):
        if s is not None and word_of[i] is None:
            word_of[i] = next((k for k, (_, a, _) in enumerate(words) if a >= s[0]), None)
    seen = {w for w in word_of if w is not None}
    kept = [w for k, w in enumerate(words) if k in seen]  # words cut by max_length dropped
    renumber = {old: new for new, old in enumerate(sorted(seen))}
    return Encoded(text, list(ids), list(types) if types is not None else None,
                   tokenizer.convert_ids_to_tokens(list(ids)), spans,
                   [None if w is None else renumber[w] for w in word_of], kept)
