"""`tunelab predict` and `tunelab eval` for an image_classification run: labels for image
files or folders, and scores on the run's dev / test images or another image folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunelab.data.images import ImageExample, check_image, image_splits, read_folder
from tunelab.errors import DataError
from tunelab.runs.named_adapters import load_run
from tunelab.tasks.image_classification import ImageClassificationTask
from tunelab.tasks.metrics import print_classification_scores


def image_files(paths: list[str]) -> list[Path]:
    """The images named: files as given, folders searched recursively (sorted)."""
    out: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise DataError(f"predict: the folder {path} holds no files")
            out += [check_image(p) for p in found]
        elif path.is_file():
            out.append(check_image(path))
        else:
            raise DataError(f"predict: {path}: no such image file or folder")
    if not out:
        raise DataError("predict: give image files or folders, e.g. tunelab predict RUN cat.png")
    return out


def predict(run_dir: Path, paths: list[str], adapters: list[str] | None = None,
            use: str | None = None) -> list[tuple[str, float]]:
    """Print `label<TAB>probability<TAB>file` per image; return (label, probability) pairs."""
    files = image_files(paths)
    model, processor, info = load_run(run_dir, adapters, use)
    task = ImageClassificationTask.from_run_info(processor, info)
    data = task.encode([ImageExample(p, "") for p in files])
    pred = task.predict(model, data, 32, torch.device("cpu"))
    out = []
    for path, row in zip(files, pred.probs):
        label = task.labels[int(row.argmax())]
        out.append((label, float(row.max())))
        print(f"{label}\t{float(row.max()):.4f}\t{path}")
    return out


def evaluate(run_dir: Path, data: str | None, split: str, adapters: list[str] | None = None,
             use: str | None = None) -> dict[str, Any]:
    """Accuracy, macro-F1 and the confusion matrix on the run's dev or test images, or on
    `data`: a folder of label folders."""
    import yaml

    from tunelab.config import validate

    cfg = validate(yaml.safe_load((run_dir / "config.yaml").read_text()),
                   str(run_dir / "config.yaml"))
    if data:
        examples, name = read_folder(Path(data).expanduser(), "eval --data"), data
    else:
        splits = image_splits(cfg.data)
        if split == "test" and splits.test is None:
            raise DataError("this run's data has no test folder; pass --data FOLDER")
        examples, name = (splits.test if split == "test" else splits.dev), split
    model, processor, info = load_run(run_dir, adapters, use)
    task = ImageClassificationTask.from_run_info(processor, info)
    unknown = sorted({e.label for e in examples} - set(task.labels))
    if unknown:
        raise DataError(f"eval: label folder {unknown[0]!r} is not one of the run's labels "
                        f"({', '.join(task.labels)})")
    encoded = task.encode(examples)
    pred = task.predict(model, encoded, 64, torch.device("cpu"))
    scores = print_classification_scores(name, f"{len(examples)} images", pred.labels,
                                         encoded.labels, task.labels)
    return {"loss": pred.loss, **scores}


def inspect(cfg: Any, n: int = 3) -> None:
    """`tunelab data inspect` for image folders: images per label and split, the first files,
    and what the model's processor makes of the first image (no weights load)."""
    from tunelab.models.vision import load_image_processor, model_image_mode
    from tunelab.runs.resolve import resolve_config

    splits = image_splits(cfg.data)
    for note in splits.notes:
        print(note)
    parts = [("train", splits.train), ("dev", splits.dev)] + \
        ([("test", splits.test)] if splits.test is not None else [])
    print("images per label: " + ", ".join(f"{name} {len(part)}" for name, part in parts))
    for label in splits.labels:
        counts = "  ".join(f"{name} {sum(e.label == label for e in part)}" for name, part in parts)
        print(f"  {label}: {counts}")
    for e in splits.train[:n]:
        print(f"  e.g. {e.path} -> {e.label}")
    path = resolve_config(cfg.model)
    task = ImageClassificationTask(splits.labels, load_image_processor(path), model_image_mode(path))
    shape = tuple(task.pixels(task.encode(splits.train[:1]), [0]).shape[1:])
    print(f"{type(task.processor).__name__}: each image is read as {task.mode} and becomes "
          f"pixel_values of shape {shape}")
