"""Token classification (NER): CoNLL splits, sub-word labels, the token classifier."""

from __future__ import annotations

from typing import Callable

from tunelab.config import TokenClassificationRun
from tunelab.data.conll import TagSplits, load_conll_splits
from tunelab.data.coverage import check_coverage
from tunelab.models import load_token_classifier, load_tokenizer
from tunelab.recipes.base import Setup
from tunelab.runs.resolve import resolve_config
from tunelab.tasks.token_classification import TokenClassificationTask


def token_classification(cfg: TokenClassificationRun, log: Callable[[str], None],
                         splits: TagSplits | None = None) -> Setup:
    d = cfg.data
    splits = load_conll_splits(d) if splits is None else splits
    model_path = resolve_config(cfg.model)
    for note in splits.notes:
        log(note)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev sentences; {d.scheme.upper()} "
        f"tags read as IOB2: {', '.join(splits.tags)}; loss on "
        + ("every sub-token (B-X continues as I-X)" if d.label_all_subtokens
           else "the first sub-token of each word"))
    tokenizer = load_tokenizer(model_path)
    check_coverage(tokenizer, {"train": {"words": [s.words for s in splits.train]},
                               "dev": {"words": [s.words for s in splits.dev]}},
                   log, allow=d.allow_unknown_tokens, model=cfg.model.name,
                   max_length=cfg.model.max_length, split_words=True,
                   labels={"words": f"words (file column {d.token_column})"})
    model = load_token_classifier(model_path, splits.tags, cfg.model.dropout,
                                  pad_token_id=tokenizer.pad_token_id)
    task = TokenClassificationTask(splits.tags, cfg.model.max_length, tokenizer.pad_token_id,
                                   d.label_all_subtokens)
    train, dev = task.encode(tokenizer, splits.train), task.encode(tokenizer, splits.dev)
    for name, part in (("train", train), ("dev", dev)):
        if part.lost_words:
            log(f"  {name}: {part.lost_words} words have no sub-token within model.max_length "
                f"{cfg.model.max_length} (untrained; scored as predicted O)")
    return Setup(model, tokenizer, task, train, dev, model_path,
                 {"labels": splits.tags, "scheme": d.scheme,
                  "label_all_subtokens": d.label_all_subtokens}, splits.train)
