"""Image classification: read the image folders, load the classifier and its image processor."""

from __future__ import annotations

from typing import Callable

from tunelab.config import ImageClassificationRun
from tunelab.data.images import ImageSplits, image_splits
from tunelab.models.vision import image_mode, load_image_classifier, load_image_processor
from tunelab.recipes.base import Setup
from tunelab.runs.resolve import resolve_config
from tunelab.tasks.image_classification import ImageClassificationTask


def image_classification(cfg: ImageClassificationRun, log: Callable[[str], None],
                         splits: ImageSplits | None = None) -> Setup:
    """Data first (a bad file fails before weights load), then the model; pixels are made per
    batch by the model's own processor, so the images on disk are never rewritten."""
    splits = image_splits(cfg.data) if splits is None else splits
    for note in splits.notes:
        log(note)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev images, "
        f"labels: {', '.join(splits.labels)}")
    model_path = resolve_config(cfg.model)
    processor = load_image_processor(model_path)
    model = load_image_classifier(model_path, splits.labels, cfg.model.dropout)
    mode = image_mode(model.config)
    task = ImageClassificationTask(splits.labels, processor, mode)
    log(f"images: {type(processor).__name__} from {model_path}, read as {mode}")
    return Setup(model, processor, task, task.encode(splits.train), task.encode(splits.dev),
                 model_path, {"labels": splits.labels, "image_mode": mode}, splits.train)
