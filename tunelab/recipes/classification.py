"""Sequence classification: read the splits, load the classifier, encode (augmented on the fly)."""

from __future__ import annotations

from typing import Callable

from tunelab.config import ClassificationRun
from tunelab.data import Splits, load_splits
from tunelab.data.augment.epochs import build
from tunelab.models import load_classifier, load_tokenizer
from tunelab.recipes.backtranslate import paraphraser
from tunelab.recipes.base import Setup
from tunelab.runs.resolve import resolve
from tunelab.tasks.classification import ClassificationTask


def classification(cfg: ClassificationRun, log: Callable[[str], None],
                   splits: Splits | None = None) -> Setup:
    splits = load_splits(cfg.data) if splits is None else splits
    model_path = resolve(cfg.model.name)
    for note in splits.notes:
        log(note)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev examples, "
        f"labels: {', '.join(splits.labels)}")
    tokenizer = load_tokenizer(model_path)
    model = load_classifier(model_path, splits.labels, cfg.model.dropout,
                            pad_token_id=tokenizer.pad_token_id)
    task = ClassificationTask(splits.labels, cfg.model.max_length, tokenizer.pad_token_id)
    if cfg.data.augment is None:
        train = task.encode(tokenizer, splits.train)
    else:  # copies drawn per epoch, the originals always kept
        train = build(cfg.data.augment, splits.train, tokenizer, model,
                      lambda examples: task.encode(tokenizer, examples), log,
                      paraphraser(cfg.data.augment))
    return Setup(model, tokenizer, task, train,
                 task.encode(tokenizer, splits.dev), model_path,
                 {"labels": splits.labels, "text_pair": splits.train[0].text_pair is not None})
