"""Word-level tags <-> sub-token labels, tokenised tagged sentences, and their collation.

The tokenizer splits words into sub-tokens; `word_ids()` (fast tokenizers) says which word
each sub-token came from. Going in, a word's first sub-token carries its tag and later
sub-tokens are ignored by the loss (or, with label_all_subtokens, carry the tag's inside
form, B-X -> I-X, as transformers' run_ner does). Coming back, a word takes the prediction
of its first sub-token, so scores are per word whichever way training labelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.errors import ModelError

IGNORE = -100  # label of sub-tokens the loss skips (cross_entropy's ignore_index)


def subtoken_labels(word_ids: list[int | None], word_labels: list[int], label_all: bool,
                    inside: list[int]) -> list[int]:
    """Per sub-token label ids. `inside[k]` is label k's continuation (B-X -> I-X, else k)."""
    out: list[int] = []
    prev: int | None = None
    for w in word_ids:
        if w is None:  # [CLS], [SEP], padding
            out.append(IGNORE)
        elif w != prev:
            out.append(word_labels[w])
        else:
            out.append(inside[word_labels[w]] if label_all else IGNORE)
        prev = w
    return out


def word_predictions(subtoken_preds: list[int], word_ids: list[int | None], n_words: int,
                     missing: int) -> list[int]:
    """Per word label ids from per sub-token ones: the first sub-token's. A word with no
    sub-token (cut at max_length, or dropped by the tokenizer) gets `missing` (O)."""
    out = [-1] * n_words
    for pred, w in zip(subtoken_preds, word_ids):
        if w is not None and out[w] == -1:
            out[w] = pred
    return [missing if p == -1 else p for p in out]


def inside_forms(tags: list[str]) -> list[int]:
    """For each tag id, the id of its inside form: B-X -> I-X; O and I-X map to themselves."""
    index = {t: i for i, t in enumerate(tags)}
    return [index.get("I-" + t[2:], i) if t.startswith("B-") else i for i, t in enumerate(tags)]


@dataclass
class TokenEncoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[list[int]]  # per sub-token; IGNORE where the loss skips
    word_ids: list[list[int | None]]
    gold: list[list[str]]  # per word IOB2 tags: what predictions are scored against
    trained: list[int]  # labelled sub-tokens per example
    lost_words: int  # words with no sub-token (beyond max_length or dropped): predicted O
    mean_trained: float  # labelled sub-tokens per example, on average

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode_words(tokenizer, words: list[list[str]], tags: list[list[str]], tag_ids: dict[str, int],
                 max_length: int, label_all: bool) -> TokenEncoded:
    """Tokenise pre-split sentences and align their word tags to sub-tokens."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"{type(tokenizer).__name__}: token classification needs a fast "
                         "tokenizer (word_ids maps sub-tokens to words); the model directory "
                         "needs a tokenizer.json")
    out = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    inside = inside_forms(list(tag_ids))
    labels, word_ids, trained, lost = [], [], [], 0
    for i, sent_tags in enumerate(tags):
        wid = out.word_ids(i)
        row = subtoken_labels(wid, [tag_ids[t] for t in sent_tags], label_all, inside)
        labels.append(row)
        word_ids.append(wid)
        trained.append(sum(1 for y in row if y != IGNORE))
        lost += len(sent_tags) - len({w for w in wid if w is not None})
    return TokenEncoded(out["input_ids"], out.get("token_type_ids"), labels, word_ids,
                        [list(t) for t in tags], trained, lost, sum(trained) / max(len(trained), 1))


def collate_tokens(data: TokenEncoded, index: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded (B, T) input_ids, attention_mask, labels (IGNORE on padding), token types."""
    width = max(len(data.input_ids[i]) for i in index)
    ids = torch.full((len(index), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(index), width), dtype=torch.long)
    labels = torch.full((len(index), width), IGNORE, dtype=torch.long)
    types = torch.zeros((len(index), width), dtype=torch.long)
    for row, i in enumerate(index):
        n = len(data.input_ids[i])
        ids[row, :n] = torch.tensor(data.input_ids[i])
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(data.labels[i])
        if data.token_type_ids is not None:
            types[row, :n] = torch.tensor(data.token_type_ids[i])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if data.token_type_ids is not None:
        batch["token_type_ids"] = types
    return batch
