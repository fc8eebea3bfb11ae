"""`tunelab data augment CONFIG --out FILE`: the augmented training set, materialised."""

from __future__ import annotations

from pathlib import Path

from tunelab.config import ClassificationRun, RunConfig
from tunelab.data import load_splits
from tunelab.data.augment.epochs import build, write_jsonl
from tunelab.errors import ConfigError
from tunelab.models import load_classifier, load_tokenizer
from tunelab.recipes.backtranslate import paraphraser
from tunelab.runs.resolve import resolve


def materialise(cfg: RunConfig, out: Path, epoch: int = 0) -> dict[str, int]:
    """Write the originals and their copies of `epoch` (what training on the fly would see
    then) to `out`; training on that file with no data.augment sees those same rows."""
    if not isinstance(cfg, ClassificationRun):
        raise ConfigError(f"data augment: augmentation is for classification data; this config "
                          f"is a {cfg.task} run")
    if cfg.data.augment is None:
        raise ConfigError("data augment: the config has no data.augment section; add one (e.g. "
                          "data.augment.copies=2) or pass it as an override")
    if epoch < 0:
        raise ConfigError(f"data augment --epoch: {epoch} is negative; epochs count from 0")
    splits = load_splits(cfg.data)
    for note in splits.notes:
        print(note)
    path = resolve(cfg.model.name)
    tokenizer = load_tokenizer(path)
    model = load_classifier(path, splits.labels, cfg.model.dropout,
                            pad_token_id=tokenizer.pad_token_id, pooling=cfg.model.pooling)
    train = build(cfg.data.augment, splits.train, tokenizer, model, None, print,
                  paraphraser(cfg.data.augment))
    counts = write_jsonl(train, out, epoch)
    print(f"wrote {sum(counts.values())} rows to {out} (epoch {epoch}): "
          + ", ".join(f"{n} {source}" for source, n in counts.items())
          + "; train on it with data.train: FILE (columns text, label) and no data.augment")
    return counts
