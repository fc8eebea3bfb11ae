"""Sequence classification: read the splits, load the classifier, encode (augmented on the fly)."""

from __future__ import annotations

from typing import Callable

from tunelab.config import ClassificationRun
from tunelab.data import Splits, load_splits
from tunelab.data.augment.epochs import build
from tunelab.data.coverage import check_coverage
from tunelab.data.splits import source_settings
from tunelab.models import load_classifier, load_tokenizer
from tunelab.recipes.backtranslate import paraphraser
from tunelab.recipes.base import Setup
from tunelab.runs.resolve import resolve_config
from tunelab.tasks.classification import ClassificationTask


def classification(cfg: ClassificationRun, log: Callable[[str], None],
                   splits: Splits | None = None) -> Setup:
    splits = load_splits(cfg.data) if splits is None else splits
    model_path = resolve_config(cfg.model)
    for note in splits.notes:
        log(note)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev examples, "
        f"labels: {', '.join(splits.labels)}")
    tokenizer = load_tokenizer(model_path)
    check_readable(cfg, tokenizer, splits, log)
    model = load_classifier(model_path, splits.labels, cfg.model.dropout,
                            pad_token_id=tokenizer.pad_token_id, pooling=cfg.model.pooling)
    task = ClassificationTask(splits.labels, cfg.model.max_length, tokenizer.pad_token_id)
    if cfg.data.augment is None:
        train = task.encode(tokenizer, splits.train)
    else:  # copies drawn per epoch, the originals always kept
        train = build(cfg.data.augment, splits.train, tokenizer, model,
                      lambda examples: task.encode(tokenizer, examples), log,
                      paraphraser(cfg.data.augment))
    return Setup(model, tokenizer, task, train,
                 task.encode(tokenizer, splits.dev), model_path,
                 {"labels": splits.labels, "text_pair": splits.train[0].text_pair is not None,
                  **({"pooling": "mean"} if cfg.model.pooling == "mean" else {})},
                 splits.train)


def check_readable(cfg: ClassificationRun, tokenizer, splits: Splits,
                   log: Callable[[str], None]) -> None:
    """Unknown-token share of the train and dev text (and the share cut by model.max_length):
    a DataError when the model's vocabulary cannot read the text (tunelab/data/coverage.py)."""
    columns = source_settings(cfg.data)[2]
    pair = splits.train[0].text_pair is not None if splits.train else False
    labels = {name: name if col == name else f"{name} (file column {col!r})"
              for name, col in (("text", columns.text), ("text_pair", columns.text_pair))}
    check_coverage(tokenizer, {split: {"text": [e.text for e in part],
                                       "text_pair": [e.text_pair or "" for e in part] if pair
                                       else None}
                               for split, part in (("train", splits.train), ("dev", splits.dev))},
                   log, allow=cfg.data.allow_unknown_tokens, model=cfg.model.name,
                   max_length=cfg.model.max_length, labels=labels)
