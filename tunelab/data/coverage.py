"""Can the model read the data? The share of the text's tokens that the tokenizer maps to its
unknown token, and the share of examples cut by model.max_length, measured at encoding time.

A model whose vocabulary lacks the data's script (Chinese reviews through an uncased English
WordPiece vocabulary) sees mostly [UNK] and "learns" the majority class. Above WARN_SHARE
the recipe logs one summary line with sample words; above STOP_SHARE it stops with a
DataError unless data.allow_unknown_tokens is true. Byte-level tokenizers (GPT-2 style BPE,
SentencePiece with byte fallback) never produce the unknown token: the check is a no-op.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

from tunelab.data.sft import Completion, Conversation, PlainText, Record
from tunelab.errors import DataError

WARN_SHARE = 0.02  # above: one logged line with the share and sample words
STOP_SHARE = 0.30  # above: a DataError, unless data.allow_unknown_tokens
TRUNCATED_SHARE = 0.01  # examples cut by model.max_length: at or above, the line is logged too
SAMPLES = 5  # words shown that map to the unknown token
WORD_EXAMPLES = 500  # examples per column searched for those words
ALLOW_KEY = "data.allow_unknown_tokens"

# a text column: plain strings, or pre-split words (token classification)
Texts = Sequence[str] | Sequence[Sequence[str]]


@dataclass
class Count:
    """Tokens of one column of one split, special tokens the tokenizer adds excluded."""

    tokens: int = 0
    unknown: int = 0
    words: Counter = field(default_factory=Counter)  # text that became the unknown token
    lengths: list[int] = field(default_factory=list)  # tokens per example

    @property
    def share(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0


@dataclass
class Coverage:
    """Counts per split and column, and the share of examples cut by max_length per split."""

    unk_token: str
    counts: dict[str, dict[str, Count]]  # split -> column -> count
    truncated: dict[str, float]  # split -> share of examples longer than max_length
    max_length: int | None

    def share(self, column: str) -> tuple[float, str]:
        """The highest share of `column` over the splits, and that split."""
        return max((c[column].share, split) for split, c in self.counts.items() if column in c)

    def columns(self) -> list[str]:
        return list(dict.fromkeys(col for c in self.counts.values() for col in c))

    def samples(self, column: str | None = None) -> list[str]:
        words: Counter = Counter()
        for c in self.counts.values():
            for col, count in c.items():
                if column is None or col == column:
                    words.update(count.words)
        return [w for w, _ in words.most_common(SAMPLES)]

    def worst(self) -> float:
        return max((self.share(col)[0] for col in self.columns()), default=0.0)

    def line(self) -> str:
        """The one summary line: unknown-token shares per column and split, sample words, and
        the truncated share per split."""
        parts = []
        for col in self.columns():
            shares = " / ".join(f"{c[col].share:.1%} of {split}" for split, c in self.counts.items()
                                if col in c)
            parts.append(f"{col} {shares} tokens")
        text = f"data: unknown token {self.unk_token}: " + "; ".join(parts)
        samples = self.samples()
        if samples and self.worst() > WARN_SHARE:
            text += " (e.g. " + ", ".join(samples) + ")"
        if self.max_length is not None:
            text += (f"; truncated at model.max_length {self.max_length}: "
                     + " / ".join(f"{share:.1%} of {split}" for split, share in self.truncated.items())
                     + " examples")
        return text

    def needs_line(self) -> bool:
        return self.worst() > WARN_SHARE or any(s >= TRUNCATED_SHARE
                                                for s in self.truncated.values())


def unknown_id(tokenizer) -> int | None:
    """The tokenizer's unknown-token id, or None where it never produces one (no unk token;
    byte-level BPE; byte fallback)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        model = spec.get("model") or {}
        if model.get("byte_fallback") or "ByteLevel" in json.dumps(spec.get("pre_tokenizer")):
            return None
    elif getattr(tokenizer, "byte_encoder", None) is not None:  # slow GPT-2 style tokenizers
        return None
    return unk


def count(tokenizer, texts: Texts, unk: int, split_words: bool = False,
          batch: int = 2048) -> Count:
    """Tokens and unknown tokens of `texts`, without the special tokens the tokenizer adds."""
    out = Count()
    hit: list[int] = []  # examples with an unknown token (the first WORD_EXAMPLES: samples)
    for start in range(0, len(texts), batch):
        chunk = _inputs(texts[start:start + batch], split_words)
        if not chunk:
            continue
        enc = tokenizer(chunk, add_special_tokens=False, truncation=False,
                        is_split_into_words=split_words)
        for i, ids in enumerate(enc["input_ids"]):
            out.lengths.append(len(ids))
            out.tokens += len(ids)
            n = ids.count(unk)
            out.unknown += n
            if n and len(hit) < WORD_EXAMPLES:
                hit.append(start + i)
    if hit and getattr(tokenizer, "is_fast", False):  # the words, from the tokens' offsets
        chunk = _inputs([texts[i] for i in hit], split_words)
        enc = tokenizer(chunk, add_special_tokens=False, truncation=False,
                        is_split_into_words=split_words,
                        return_offsets_mapping=not split_words)
        for i, ids in enumerate(enc["input_ids"]):
            for k, t in enumerate(ids):
                if t == unk:
                    word = _word(enc, chunk[i], i, k, split_words)
                    if word:
                        out.words[word] += 1
    return out


def _inputs(texts: Texts, split_words: bool) -> list:
    return [list(t) for t in texts] if split_words else [t or "" for t in texts]


def _word(enc, text, i: int, k: int, split_words: bool) -> str | None:
    """The piece of the input that became unknown token k of example i (fast tokenizers)."""
    if split_words:
        w = enc.word_ids(i)[k]
        return text[w] if w is not None else None
    a, b = enc["offset_mapping"][i][k]
    return text[a:b].strip()[:40] or None


def measure(tokenizer, splits: dict[str, dict[str, Texts]], max_length: int | None = None,
            split_words: bool = False) -> Coverage | None:
    """Counts of every split's columns (e.g. {"train": {"text": [...]}, "dev": {...}}); None
    where the tokenizer never produces an unknown token. With `max_length`, also the share
    of each split's examples whose columns together, with the special tokens, exceed it."""
    unk = unknown_id(tokenizer)
    if unk is None:
        return None
    counts = {split: {col: count(tokenizer, texts, unk, split_words)
                      for col, texts in cols.items() if texts is not None}
              for split, cols in splits.items()}
    truncated: dict[str, float] = {}
    if max_length is not None:
        for split, cols in counts.items():
            lengths = [sum(x) for x in zip(*(c.lengths for c in cols.values()))]
            extra = tokenizer.num_special_tokens_to_add(pair=len(cols) > 1)
            truncated[split] = (sum(n + extra > max_length for n in lengths) / len(lengths)
                                if lengths else 0.0)
    return Coverage(str(tokenizer.unk_token), counts, truncated, max_length)


def check_coverage(tokenizer, splits: dict[str, dict[str, Texts]], log: Callable[[str], None],
                   *, allow: bool = False, model: str = "the model", max_length: int | None = None,
                   split_words: bool = False, labels: dict[str, str] | None = None
                   ) -> Coverage | None:
    """Measure (see `measure`), log the summary line when a share is notable, and stop with a
    DataError when a column's unknown-token share exceeds STOP_SHARE, unless `allow`.
    `labels` names a column for messages (e.g. {"text": "text (file column 'review')"})."""
    cov = measure(tokenizer, splits, max_length, split_words)
    if cov is None:
        return None
    over = [(cov.share(col), col) for col in cov.columns() if cov.share(col)[0] > STOP_SHARE]
    if over and not allow:
        col = max(over)[1]
        split = next(s for s, c in cov.counts.items()  # train first
                     if col in c and c[col].share > STOP_SHARE)
        share = cov.counts[split][col].share
        name = (labels or {}).get(col, col)
        others = ", ".join(f"{s}: {c[col].share:.1%}" for s, c in cov.counts.items()
                           if col in c and s != split)
        samples = cov.samples(col)
        raise DataError(
            f"data: {share:.1%} of the {split} tokens of column {name} are the unknown token "
            f"{cov.unk_token}" + (f" ({others})" if others else "")
            + (f", e.g. {', '.join(samples)}" if samples else "")
            + f": the vocabulary of {model} does not cover this text's script, so the model "
            "would see mostly unknown tokens; choose a model whose vocabulary covers the script "
            f"(e.g. a multilingual or Chinese model), or set {ALLOW_KEY}: true to run anyway")
    if cov.needs_line():
        log(("warning: " if cov.worst() > WARN_SHARE else "") + cov.line()
            + (f" ({ALLOW_KEY}: true, running anyway)" if over else ""))
    return cov


def record_fields(records: Sequence[Record]) -> dict[str, list[str]]:
    """The text of SFT records by field: messages by role (one text per record), prompt and
    completion, or text; for check_coverage."""
    out: dict[str, list[str]] = {}
    for r in records:
        if isinstance(r, Conversation):
            by_role: dict[str, list[str]] = {}
            for m in r.messages:
                by_role.setdefault(m["role"], []).append(m["content"])
            parts = {f"{role} messages": "\n".join(texts) for role, texts in by_role.items()}
        elif isinstance(r, Completion):
            parts = {"prompt": r.prompt, "completion": r.completion}
        elif isinstance(r, PlainText):
            parts = {"text": r.text}
        else:
            continue
        for name, text in parts.items():
            out.setdefault(name, []).append(text)
    return out
