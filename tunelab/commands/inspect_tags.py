"""`tunelab data inspect` for token classification: which sub-tokens carry which tag."""

from __future__ import annotations

from collections import Counter

from tunelab.commands.highlight import highlight
from tunelab.config import TokenClassificationRun
from tunelab.data.conll import Sentence, load_conll_splits
from tunelab.data.render import histogram
from tunelab.data.subwords import IGNORE, TokenEncoded
from tunelab.models import load_tokenizer
from tunelab.runs.resolve import resolve
from tunelab.tasks.token_classification import TokenClassificationTask


def mark_subtokens(tokenizer, ids: list[int], labels: list[int], tags: list[str],
                   colour: bool) -> str:
    """Sub-tokens as `token/TAG` where the loss reads a label, bare where it does not."""
    out = []
    for tok, y in zip(tokenizer.convert_ids_to_tokens(ids), labels):
        if y == IGNORE:
            out.append(tok)
        else:
            out.append(highlight(f"{tok}/{tags[y]}", colour, f"{tok}/{tags[y]}"))
    return " ".join(out)


def inspect_tags(cfg: TokenClassificationRun, n: int = 3, colour: bool = False) -> None:
    splits = load_conll_splits(cfg.data)
    tokenizer = load_tokenizer(resolve(cfg.model.name))
    task = TokenClassificationTask(splits.tags, cfg.model.max_length, tokenizer.pad_token_id,
                                   cfg.data.label_all_subtokens)
    train = task.encode(tokenizer, splits.train)
    rule = ("every sub-token (B-X continues as I-X)" if cfg.data.label_all_subtokens
            else "the first sub-token of each word")
    print(f"{len(splits.train)} training sentences, {len(splits.dev)} dev; "
          f"{cfg.data.scheme.upper()} tags read as IOB2; the loss reads a tag on {rule}\n")
    for k in range(min(n, len(train))):
        s = splits.train[k]
        print(f"--- example {k + 1} ({s.where}, {len(s.words)} words, "
              f"{len(train.input_ids[k])} sub-tokens, {train.trained[k]} labelled)")
        print("words:      " + " ".join(f"{w}/{t}" for w, t in zip(s.words, s.tags)))
        print("sub-tokens: " + mark_subtokens(tokenizer, train.input_ids[k], train.labels[k],
                                              splits.tags, colour))
    print("\n--- statistics")
    for name, part in (("train", splits.train), ("dev", splits.dev)):
        print(f"{name}: {_counts(part)}")
    _token_stats(train, cfg.model.max_length)


def _counts(sentences: list[Sentence]) -> str:
    kinds = Counter(t[2:] for s in sentences for t in s.tags if t.startswith("B-"))
    words = sum(len(s.words) for s in sentences)
    return (f"{len(sentences)} sentences, {words} words, {sum(kinds.values())} entities ("
            + ", ".join(f"{k}: {kinds[k]}" for k in sorted(kinds)) + ")")


def _token_stats(data: TokenEncoded, max_length: int) -> None:
    lengths = data.lengths()
    print(f"train sub-tokens: {sum(lengths)} ({sum(data.trained)} labelled); words beyond "
          f"max_length {max_length}: {data.lost_words}")
    print("length histogram (sub-tokens):")
    for line in histogram(lengths):
        print("  " + line)
