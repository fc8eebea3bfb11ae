"""The data section of an image-classification run: image folders, one subfolder per label."""

from __future__ import annotations

from pydantic import Field

from tunelab.schema import StrictModel

__all__ = ["ImageDataConfig"]


class ImageDataConfig(StrictModel):
    """`train` is a folder of label folders (cat/, dog/, ...), or a folder holding train/ and
    optionally validation/ (or dev/, val/) and test/, each of label folders."""

    train: str
    dev: str | None = None  # a folder of label folders; default: validation/ or a seeded split
    test: str | None = None  # default: test/ beside train/, when there is one
    dev_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # used only when no dev folder exists
    split_seed: int = 0
    max_train_examples: int | None = Field(None, ge=1)  # a seeded sample, every label kept
    max_eval_examples: int | None = Field(None, ge=1)
