"""Image folders: one subfolder per label (cat/, dog/), read into train / dev / test splits.

`data.train` is a folder of label folders, or a folder holding train/ and optionally
validation/ (or dev/, val/) and test/, each of label folders. Without a dev folder a seeded,
stratified share of train is held out (data.dev_fraction). Every file's header is opened here,
so a file that is not an image fails before any weights load, by name. Pixels are made later,
per batch, by the model's own image processor (tasks/image_classification.py).

`python -m tunelab.data.images --digits OUT` writes scikit-learn's bundled 8x8 digits as PNG
label folders: a real, offline image set to try the pipeline on.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config.vision import ImageDataConfig
from tunelab.data.splits import Splits, sort_labels
from tunelab.errors import DataError

DEV_NAMES = ("validation", "dev", "val")
SPLIT_NAMES = ("train", "test", *DEV_NAMES)


@dataclass(frozen=True)
class ImageExample:
    path: Path
    label: str


ImageSplits = Splits[ImageExample]  # train / dev / test image lists, labels, notes


@dataclass
class ImageData:
    """An encoded split: the images' files and label ids; pixels are made per batch."""

    paths: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.paths)

    def lengths(self) -> list[int]:
        """One unit per image: batches are never sorted by size (all are resized alike)."""
        return [1] * len(self.paths)


def read_folder(folder: Path, key: str) -> list[ImageExample]:
    """The images under `folder`'s label folders; `key` (data.train...) names the setting."""
    if not folder.is_dir():
        raise DataError(f"{key}: {folder} is not a folder; give a folder with one subfolder "
                        "of images per label")
    loose = sorted(p.name for p in folder.iterdir() if p.is_file() and not _hidden(p))
    if loose:
        raise DataError(f"{key}: {folder / loose[0]} lies outside a label folder; put each "
                        f"image in the folder of its label (e.g. {folder}/cat/1.png)")
    labels = sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p))
    if not labels:
        raise DataError(f"{key}: {folder} holds no label folders; put the images of each label "
                        f"in a subfolder named after it (e.g. {folder}/cat/1.png)")
    out: list[ImageExample] = []
    for label_dir in labels:
        files = sorted(p for p in label_dir.rglob("*") if p.is_file() and not _hidden(p))
        if not files:
            raise DataError(f"{key}: the label folder {label_dir} holds no images")
        out += [ImageExample(check_image(p), label_dir.name) for p in files]
    return out


def _hidden(path: Path) -> bool:
    """.DS_Store, .ipynb_checkpoints and the like: never data."""
    return path.name.startswith(".")


def check_image(path: Path) -> Path:
    """`path`, after Pillow reads its header; a DataError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - the header is read
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not an image Pillow can read ({type(exc).__name__}); image "
                        "folders may hold only image files (png, jpg, ...)") from None
    return path


def load_image(path: Path, mode: str) -> Any:
    """The decoded image in `mode` (RGB for 3-channel models, L for 1-channel ones)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except OSError as exc:
        raise DataError(f"{path}: cannot decode the image ({exc})") from None


def image_splits(cfg: ImageDataConfig) -> ImageSplits:
    """The run's train / dev / test images and its labels (the train folders' names)."""
    root = Path(cfg.train).expanduser()
    named = _split_folders(root)
    notes: list[str] = []
    if named:
        notes.append(f"data: {root} holds the splits {', '.join(sorted(named))}")
    train = read_folder(named.get("train", root), "data.train")
    labels = sort_labels({e.label for e in train})
    if len(labels) < 2:
        raise DataError(f"data.train: {named.get('train', root)} holds one label folder only "
                        f"({labels[0]}); a classifier needs at least two labels")
    dev_dir = Path(cfg.dev).expanduser() if cfg.dev else named.get("dev")
    if dev_dir is not None:
        dev = read_folder(dev_dir, "data.dev")
    else:
        train, dev = held_out(train, cfg.dev_fraction, cfg.split_seed)
        notes.append(f"data: no dev folder; {len(dev)} images of train held out "
                     f"(data.dev_fraction {cfg.dev_fraction:g}, seed {cfg.split_seed})")
    test_dir = Path(cfg.test).expanduser() if cfg.test else named.get("test")
    test = read_folder(test_dir, "data.test") if test_dir is not None else None
    for key, part in (("data.dev", dev), ("data.test", test or [])):
        unknown = sorted({e.label for e in part} - set(labels))
        if unknown:
            raise DataError(f"{key}: label folder {unknown[0]!r} is not among the training "
                            f"labels ({', '.join(labels)})")
    train = sample(train, cfg.max_train_examples, cfg.split_seed)
    dev = sample(dev, cfg.max_eval_examples, cfg.split_seed)
    return ImageSplits(train, dev, test, labels, notes)


def _split_folders(root: Path) -> dict[str, Path]:
    """{train, dev, test: folder} when `root` holds split folders (train/ among them), else {}."""
    if not (root / "train").is_dir():
        return {}
    subs = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not _hidden(p)}
    if not set(subs) <= set(SPLIT_NAMES):
        return {}  # train/ is a label folder among others
    out = {"train": subs["train"]}
    dev = next((subs[n] for n in DEV_NAMES if n in subs), None)
    if dev is not None:
        out["dev"] = dev
    if "test" in subs:
        out["test"] = subs["test"]
    return out


def held_out(examples: list[ImageExample], fraction: float, seed: int
             ) -> tuple[list[ImageExample], list[ImageExample]]:
    """A seeded split that keeps each label's share in both parts (one image per label at least)."""
    by_label: dict[str, list[ImageExample]] = {}
    for e in examples:
        by_label.setdefault(e.label, []).append(e)
    keep: list[ImageExample] = []
    held: list[ImageExample] = []
    rng = random.Random(seed)
    for label, items in sorted(by_label.items()):
        if len(items) < 2:
            raise DataError(f"data.train: label {label!r} has {len(items)} image; a dev split "
                            "needs two per label at least; add images or give data.dev")
        items = items[:]
        rng.shuffle(items)
        n = min(len(items) - 1, max(1, round(len(items) * fraction)))
        held += items[:n]
        keep += items[n:]
    return keep, held


def sample(examples: list[ImageExample], limit: int | None, seed: int) -> list[ImageExample]:
    """A seeded `limit` of the examples (all of them when None or fewer), in their order."""
    if limit is None or len(examples) <= limit:
        return examples
    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


def write_digits(out: Path, per_label: int | None = None, size: int = 8) -> Path:
    """scikit-learn's bundled digits (8x8 grey, 0-16) as PNG label folders 0/ ... 9/."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        label = int(label)
        if per_label is not None and counts.get(label, 0) >= per_label:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = (pixels * (255.0 / 16.0)).round().astype(np.uint8)
        image = Image.fromarray(grey, mode="L")
        if size != 8:
            image = image.resize((size, size), Image.Resampling.NEAREST)
        image.save(folder / f"{i:04d}.png")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tunelab.data.images",
                                     description="write sklearn's digits as image folders")
    parser.add_argument("--digits", type=Path, required=True, help="output folder")
    parser.add_argument("--per-label", type=int, default=None, help="images per digit")
    args = parser.parse_args(argv)
    write_digits(args.digits, args.per_label)
    print(f"wrote {sum(1 for _ in args.digits.rglob('*.png'))} images to {args.digits}")


if __name__ == "__main__":
    main()
