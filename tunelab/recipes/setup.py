"""Per-task setup: read the data, load the matching model and tokenizer, encode.

Data are read before any weights load, so data errors surface in a second. One recipe module
per task; this one picks the recipe for a config.
"""

from __future__ import annotations

from typing import Any, Callable

from tunelab.config import RunConfig
from tunelab.errors import DataError
from tunelab.recipes.base import Setup
from tunelab.recipes.causal_lm import causal_lm
from tunelab.recipes.classification import classification
from tunelab.recipes.image_classification import image_classification
from tunelab.recipes.mlm import masked_lm
from tunelab.recipes.multitask import multitask
from tunelab.recipes.token_classification import token_classification
from tunelab.recipes.translation import translation

SETUPS: dict[str, Callable[[Any, Callable[[str], None]], Setup]] = {
    "classification": classification, "causal_lm": causal_lm,
    "token_classification": token_classification, "translation": translation,
    "masked_lm": masked_lm, "multitask": multitask, "image_classification": image_classification}


# tasks whose setup takes ready-made splits (cross-validation folds)
TAKE_SPLITS = ("classification", "token_classification")


def setup(cfg: RunConfig, log: Callable[[str], None], splits: Any = None) -> Setup:
    if splits is None:
        return SETUPS[cfg.task](cfg, log)
    if cfg.task not in TAKE_SPLITS:
        raise DataError(f"task {cfg.task}: given splits are supported for "
                        f"{' and '.join(TAKE_SPLITS)} only")
    return SETUPS[cfg.task](cfg, log, splits)
