"""An explanation as the reader sees it: sub-token attributions summed back to the words of
the original text, each word with its character span (text[start:end] is the word)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.explain.encode import Encoded


@dataclass
class WordScore:
    word: str
    start: int  # characters in the text, end exclusive
    end: int
    score: float


@dataclass
class Explanation:
    text: str
    target: str  # what is explained ("label positive", "PER 'John'", "token ' Paris'")
    probability: float  # the target's probability on the full input
    method: str
    words: list[WordScore]
    tokens: list[tuple[str, float]]  # (sub-token, score), specials included
    completeness_error: float | None = None  # IG: |sum(attributions) - (F(x) - F(baseline))|
    extra: dict[str, Any] = field(default_factory=dict)  # gold label, generated position...

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["tokens"] = [{"token": t, "score": s} for t, s in self.tokens]
        return out


def word_scores(enc: Encoded, token_scores: list[float]) -> list[float]:
    """(W,) the sum of each word's sub-token scores; special tokens count for no word."""
    out = [0.0] * len(enc.words)
    for w, s in zip(enc.word_of, token_scores):
        if w is not None:
            out[w] += s
    return out


def to_words(enc: Encoded, token_scores: list[float]) -> list[WordScore]:
    return [WordScore(w, a, b, s) for (w, a, b), s in zip(enc.words,
                                                         word_scores(enc, token_scores))]
