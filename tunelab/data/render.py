"""Records -> token ids + labels, through the tokenizer's own chat template only.

Which tokens train is decided here and nowhere else: the assistant turns (all, or the last)
including the end-of-turn token that closes each of them, or every token. Nothing is added
to the text that the template (or `append_eos` for raw text) does not put there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.data.sft import Completion, Conversation, Record
from tunelab.errors import DataError

IGNORE = -100
# Tokens that close a turn in common chat templates (used only if the tokenizer has them).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def trained_count(labels: list[int]) -> int:
    """Tokens that train: labelled ones after the first (token 0 has no context to predict it)."""
    return sum(1 for label in labels[1:] if label != IGNORE)


@dataclass
class LMEncoded:
    input_ids: list[list[int]]
    labels: list[list[int]]  # IGNORE where the token does not train
    records: list[Record] = field(default_factory=list)
    trained: list[int] = field(init=False)  # trained_count per example, counted once here
    mean_trained: float = field(init=False)  # trained tokens per example, on average

    def __post_init__(self) -> None:
        self.trained = [trained_count(labels) for labels in self.labels]
        self.mean_trained = sum(self.trained) / max(1, len(self.trained))

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


@dataclass
class RenderStats:
    examples: int = 0
    kept: int = 0
    tokens: int = 0
    supervised: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_supervision: int = 0
    lengths: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        pct = 100.0 * self.supervised / max(self.tokens, 1)
        return [f"examples: {self.examples} read, {self.kept} kept",
                f"tokens: {self.tokens} ({self.supervised} supervised, {pct:.1f}%)",
                f"truncated: {self.truncated}; dropped: {self.dropped_too_long} too long, "
                f"{self.dropped_no_supervision} with no supervised token left"]


class Renderer:
    def __init__(self, tokenizer, loss_on: str, max_length: int, truncation: str,
                 append_eos: bool, template: str | None = None):
        if template is not None:
            path = Path(template).expanduser()
            if not path.is_file():
                raise DataError(f"data.template: {path}: file not found")
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        self.tok, self.loss_on, self.max_length = tokenizer, loss_on, max_length
        self.truncation, self.append_eos = truncation, append_eos
        vocab = tokenizer.get_vocab()
        self.end_ids = {vocab[t] for t in END_OF_TURN if t in vocab}
        if tokenizer.eos_token_id is not None:
            self.end_ids.add(tokenizer.eos_token_id)

    # ---------------------------------------------------------------- templates
    def chat_text(self, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
        if not getattr(self.tok, "chat_template", None):
            raise DataError("the tokenizer has no chat template; give one with data.template: FILE")
        return self.tok.apply_chat_template(messages, tokenize=False,
                                            add_generation_prompt=generation_prompt)

    def prompt_text(self, record: Record) -> str:
        """What a model is given at generation time for this record (no answer)."""
        if isinstance(record, Conversation):
            last = max(i for i, m in enumerate(record.messages) if m["role"] == "assistant")
            return self.chat_text(record.messages[:last], generation_prompt=True)
        if isinstance(record, Completion):
            return record.prompt
        return record.text[: max(1, len(record.text) // 2)]

    # ---------------------------------------------------------------- one record
    def render(self, record: Record) -> tuple[list[int], list[int]]:
        if isinstance(record, Conversation):
            return self._conversation(record)
        eos = [self.tok.eos_token_id] if self.append_eos and self.tok.eos_token_id is not None else []
        if isinstance(record, Completion):
            prompt = self.tok(record.prompt)["input_ids"]
            answer = self.tok(record.completion, add_special_tokens=False)["input_ids"] + eos
            labels = (prompt if self.loss_on == "all" else [IGNORE] * len(prompt)) + answer
            return prompt + answer, labels
        ids = self.tok(record.text)["input_ids"] + eos
        return ids, list(ids)

    def _conversation(self, record: Conversation) -> tuple[list[int], list[int]]:
        messages = record.messages
        full = self.chat_text(messages)
        enc = self.tok(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        if self.loss_on == "all":
            return ids, list(ids)
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if self.loss_on == "last_turn":
            turns = turns[-1:]
        labels = [IGNORE] * len(ids)
        for i in turns:
            prefix, upto = self.chat_text(messages[:i], True), self.chat_text(messages[: i + 1])
            start, end = len(prefix), len(upto)
            if not (full.startswith(prefix) and full.startswith(upto)):
                raise DataError(f"{record.where}: the chat template renders turn {i} differently "
                                "inside the whole conversation; cannot tell which tokens train")
            span = [j for j, (s, _) in enumerate(offsets) if start <= s < end]
            close = next((k for k, j in enumerate(span) if ids[j] in self.end_ids), None)
            if close is None:
                raise DataError(f"{record.where}: the chat template closes assistant turns with no "
                                "end-of-turn or EOS token, so the model could never learn to stop; "
                                "give a template that does (data.template)")
            for j in span[: close + 1]:
                labels[j] = ids[j]
        return ids, labels

    # ---------------------------------------------------------------- many records
    def encode(self, records: list[Record]) -> tuple[LMEncoded, RenderStats]:
        stats = RenderStats(examples=len(records))
        ids_out, labels_out, kept = [], [], []
        for record in records:
            ids, labels = self.render(record)
            if len(ids) > self.max_length:
                if self.truncation == "drop":
                    stats.dropped_too_long += 1
                    continue
                ids, labels = ids[: self.max_length], labels[: self.max_length]
                stats.truncated += 1
            trained = trained_count(labels)
            if trained == 0:
                stats.dropped_no_supervision += 1
                continue
            ids_out.append(ids)
            labels_out.append(labels)
            kept.append(record)
            stats.kept += 1
            stats.tokens += len(ids)
            stats.supervised += trained
            stats.lengths.append(len(ids))
        if not ids_out:
            raise DataError(f"no example kept out of {stats.examples}: "
                            + "; ".join(stats.lines()[2:]) + " (raise model.max_length?)")
        return LMEncoded(ids_out, labels_out, kept), stats


def histogram(lengths: list[int], bins: int = 8, width: int = 40) -> list[str]:
    """A text histogram of example lengths in tokens."""
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = Counter((n - lo) // step for n in lengths)
    top = max(counts.values())
    return [f"{lo + b * step:>6}-{lo + (b + 1) * step - 1:<6} {'#' * max(1, round(width * counts[b] / top)) if counts[b] else '':<{width}} {counts[b]}"
            for b in range(bins) if lo + b * step <= hi]
