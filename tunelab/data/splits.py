"""Resolve the configured train/dev/test sources, read them, and fix the label set."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generic, TypeVar

from tunelab.config import DataConfig
from tunelab.data.catalog import CATALOG, catalog_path, lookup
from tunelab.data.readers import Columns, Example, read_examples
from tunelab.errors import DataError

T = TypeVar("T")
E = TypeVar("E")  # the example type: text Example, or data.images.ImageExample


@dataclass
class Splits(Generic[E]):
    train: list[E]
    dev: list[E]
    test: list[E] | None
    labels: list[str]
    notes: list[str] = field(default_factory=list)


def sort_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order ('2' before '10'), others alphabetically."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def stratified_split(examples: list[Example], fraction: float, seed: int
                     ) -> tuple[list[Example], list[Example]]:
    """A seeded split that keeps each label's share in both parts."""
    from sklearn.model_selection import train_test_split

    labels = [e.label for e in examples]
    try:
        keep, held = train_test_split(examples, test_size=fraction, random_state=seed,
                                      stratify=labels)
    except ValueError as exc:
        raise DataError(f"cannot split a dev set from the training data ({exc}); give data.dev "
                        "or change data.dev_fraction") from None
    return list(keep), list(held)


def source_settings(cfg: DataConfig) -> tuple[str, bool, Columns]:
    """(format, header, columns) for the configured data, the catalog's when it is a catalog name."""
    entry = lookup(cfg.train)
    fmt = entry.format if entry and cfg.format == "auto" else cfg.format
    header = cfg.header if cfg.header is not None else (entry.header if entry else True)
    cols = (cfg.columns.model_dump() if cfg.columns
            else entry.columns if entry else {"text": "text", "label": "label"})
    return fmt, header, Columns(text=cols["text"], label=cols["label"],
                                text_pair=cols.get("text_pair"))


NAMES_NOTE = (f"data.train, data.dev, data.test and `tunelab eval --data` each take a file "
              f"path or a catalog name ({', '.join(CATALOG)})")


def read_like_training(cfg: DataConfig, path: str | Path, split: str = "dev",
                       dropped: list[str] | None = None) -> list[Example]:
    """Read another file with the training data's format and columns (data.dev, data.test,
    eval --data). A catalog name reads that dataset's `split` file, in the catalog's layout.
    `dropped` (catalog sets with known empty rows): as in read_examples."""
    entry = lookup(path) if isinstance(path, str) else None
    if entry is not None:
        relative = getattr(entry, split)
        if relative is None:
            have = [s for s in ("dev", "test") if getattr(entry, s)]
            raise DataError(f"{str(path).strip()}: the catalog dataset has no {split} file (it has "
                            f"{', '.join(['train', *have])}); give a file path for the {split} data")
        cols = entry.columns
        columns = Columns(text=cols["text"], label=cols["label"], text_pair=cols.get("text_pair"))
        return read_examples(catalog_path(relative), entry.format, entry.header, columns,
                             cfg.encoding, dropped)
    fmt, header, columns = source_settings(cfg)
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{file}: file not found ({NAMES_NOTE})")
    return read_examples(file, fmt, header, columns, cfg.encoding, dropped)


def load_splits(cfg: DataConfig) -> Splits:
    entry = lookup(cfg.train)
    if entry is not None:
        train_path = catalog_path(entry.train)
        dev_src = cfg.dev or (str(catalog_path(entry.dev)) if entry.dev else None)
        test_src = cfg.test or (str(catalog_path(entry.test)) if entry.test else None)
    else:
        train_path = Path(cfg.train).expanduser()
        dev_src, test_src = cfg.dev, cfg.test

    dropped: list[str] | None = [] if entry is not None and entry.drop_empty_text else None

    def read(p: str | Path, split: str) -> list[Example]:
        return read_like_training(cfg, p, split)

    notes = []
    train = read_like_training(cfg, train_path, "train", dropped)
    if dropped:  # the catalog's known defect, said aloud
        notes.append(f"{cfg.train}: left out {len(dropped)} row(s) with an empty text "
                     f"({', '.join(dropped[:3])})")
    if dev_src:
        dev = read(dev_src, "dev")
    else:
        train, dev = stratified_split(train, cfg.dev_fraction, cfg.split_seed)
        notes.append(f"no dev file: held out {len(dev)} training examples "
                     f"({cfg.dev_fraction:.0%}, stratified, seed {cfg.split_seed})")
    test = read(test_src, "test") if test_src else None
    labels = sort_labels({e.label for e in train})
    if len(labels) < 2:
        raise DataError(f"{train_path}: only one label ({labels[0]!r}) in the training data")
    for part in (dev, test or []):
        check_labels(part, labels)
    train, dev, test = limit_sizes(cfg, train, dev, test, notes, "examples")
    if cfg.per_class:
        train = per_class(train, labels, cfg.per_class, cfg.split_seed)
        notes.append(f"few-shot: a seeded {cfg.per_class} training examples per label "
                     f"({len(train)} in all)")
    return Splits(train, dev, test, labels, notes)


def hold_out(items: list, size: int, seed: int, what: str = "examples", source: str = ""
             ) -> tuple[list, list]:
    """(the rest, `size` items held out): a seeded random choice, both parts in file order."""
    if size >= len(items):
        where = f"{source}: " if source else ""
        raise DataError(f"{where}data.eval_size {size} leaves no training {what} out of "
                        f"{len(items)}; lower it or give data.eval_path")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in sorted(order[size:])], [items[i] for i in sorted(order[:size])]


def limit_sizes(cfg, train: list[T], dev: list[T], test: list[T] | None, notes: list[str],
                noun: str) -> tuple[list[T], list[T], list[T] | None]:
    """Seeded subsets per cfg.max_train_examples / cfg.max_eval_examples (any data config that
    has them, with split_seed)."""
    if cfg.max_train_examples and cfg.max_train_examples < len(train):
        train = random.Random(cfg.split_seed).sample(train, cfg.max_train_examples)
        notes.append(f"training on a seeded sample of {len(train)} {noun}")
    if cfg.max_eval_examples:
        dev = _sample(dev, cfg.max_eval_examples, cfg.split_seed)
        test = _sample(test, cfg.max_eval_examples, cfg.split_seed) if test else None
    return train, dev, test


def per_class(train: list[Example], labels: list[str], k: int, seed: int) -> list[Example]:
    """A seeded `k` examples of every label, in file order; a label with fewer is an error
    (a k-shot run that quietly saw fewer shots of one class would misreport itself)."""
    by_label: dict[str, list[int]] = {label: [] for label in labels}
    for i, e in enumerate(train):
        by_label[e.label].append(i)
    short = {label: len(idx) for label, idx in by_label.items() if len(idx) < k}
    if short:
        raise DataError(f"data.per_class {k}: the training data has fewer examples of "
                        + ", ".join(f"{label!r} ({n})" for label, n in short.items())
                        + "; lower data.per_class")
    rng = random.Random(seed)
    keep = sorted(i for label in labels for i in rng.sample(by_label[label], k))
    return [train[i] for i in keep]


def _sample(items: list[T], n: int, seed: int) -> list[T]:
    """A seeded random subset in file order (the head of a sorted file would be biased)."""
    if n >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in keep]


def check_labels(examples: list[Example], labels: list[str]) -> None:
    known = set(labels)
    for e in examples:
        if e.label not in known:
            raise DataError(f"{e.where}: label {e.label!r} does not occur in the training data "
                            f"(known labels: {', '.join(labels)})")


def eval_items(cfg, data: str | None, split: str, load: Callable, read_like: Callable
               ) -> tuple[list, str]:
    """The examples `tunelab eval` scores and their name: the file `--data`, read like the
    run's training data, or the run's own dev or test split."""
    if data:  # a file, or a catalog name: that dataset's `split` file
        return read_like(cfg.data, data, split), data
    splits = load(cfg.data)
    if split == "test" and splits.test is None:
        raise DataError("this run's data has no test file; pass --data PATH")
    return (splits.test if split == "test" else splits.dev), split
