"""Synonyms as nearest neighbours of a word in the model's own input-embedding matrix.

Why not WordNet: no package on PyPI ships WordNet's data (nltk and `wn` download it at run
time, which tunelab cannot do offline), and a lexical resource would cover English only.
The embedding matrix is always there, in every language the vocabulary covers, and its
neighbours are words the model already knows. They are related words rather than strict
synonyms (sometimes antonyms: "good" sits near "bad"); `min_similarity` trims the tail.

Only whole-word vocabulary entries take part (WordPiece pieces after the first, "##ing",
and byte-BPE pieces that do not start a word are not words), stopwords are never replaced
nor proposed, and neighbours are computed once for the words of the data, in chunks.
"""

from __future__ import annotations

from typing import Any

import torch

from tunelab.data.augment.words import is_stopword

CHUNK = 1024  # data words per similarity matmul


def whole_words(tokenizer) -> dict[str, int]:
    """Vocabulary entries that are a word on their own: text -> token id.

    A token counts if decoding it gives an alphabetic string that the tokenizer encodes back
    to exactly that one token as it would appear inside a sentence: after a space where the
    tokenizer marks word starts (byte-BPE "Ġword", SentencePiece), bare otherwise (WordPiece),
    so that pieces such as "ing" are left out.
    """
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    texts = [tokenizer.decode([i]).strip() for i in ids]
    keep = [(i, t) for i, t in zip(ids, texts) if t.isalpha() and (len(t) > 1 or not t.isascii())]
    if not keep:
        return {}
    marks_starts = (tokenizer(" the", add_special_tokens=False)["input_ids"]
                    != tokenizer("the", add_special_tokens=False)["input_ids"])
    prefix = " " if marks_starts else ""
    enc = tokenizer([prefix + t for _, t in keep], add_special_tokens=False)["input_ids"]
    out: dict[str, int] = {}
    for (i, text), got in zip(keep, enc):
        if got == [i] and text not in out:
            out[text] = i
    return out


class EmbeddingSynonyms:
    """word -> its nearest whole-word neighbours (cosine over input embeddings)."""

    def __init__(self, tokenizer, embeddings: torch.Tensor, neighbours: int = 10,
                 min_similarity: float = 0.45):
        self.vocab = whole_words(tokenizer)
        self.words = list(self.vocab)
        self.rows = {w: r for r, w in enumerate(self.words)}
        weight = embeddings.detach().float()[[self.vocab[w] for w in self.words]]  # (W, C)
        self.unit = torch.nn.functional.normalize(weight, dim=-1)
        self.allowed = torch.tensor([not is_stopword(w) for w in self.words])  # (W,)
        self.k, self.min_similarity = neighbours, min_similarity
        self.table: dict[str, tuple[str, ...]] = {}

    @classmethod
    def from_model(cls, tokenizer, model: Any, neighbours: int, min_similarity: float
                   ) -> "EmbeddingSynonyms":
        return cls(tokenizer, model.get_input_embeddings().weight, neighbours, min_similarity)

    def prepare(self, words: set[str]) -> None:
        """Compute the neighbours of every word in `words` that the vocabulary has whole."""
        todo = sorted(w for w in words if w not in self.table and w in self.vocab
                      and not is_stopword(w))
        for w in words:
            if w not in self.vocab or is_stopword(w):
                self.table.setdefault(w, ())
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start:start + CHUNK]
            rows = torch.tensor([self.rows[w] for w in chunk])
            sims = self.unit[rows] @ self.unit.T  # (n, W)
            sims[:, ~self.allowed] = -2.0
            sims[torch.arange(len(chunk)), rows] = -2.0  # not the word itself
            top = sims.topk(min(self.k + 5, sims.shape[1]), dim=-1)
            for w, values, idx in zip(chunk, top.values.tolist(), top.indices.tolist()):
                found = [self.words[j] for v, j in zip(values, idx)
                         if v >= self.min_similarity and self.words[j].lower() != w.lower()]
                self.table[w] = tuple(found[: self.k])

    def __call__(self, word: str) -> tuple[str, ...]:
        if word not in self.table:
            self.prepare({word})
        return self.table[word]
