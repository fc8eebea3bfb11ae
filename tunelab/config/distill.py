"""The distill: block of a classification or NER run: learn from a trained teacher run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunelab.schema import StrictModel


class DistillConfig(StrictModel):
    """Knowledge distillation (Hinton et al. 2015): the loss per example is
    (1 - alpha) * label cross-entropy + alpha * temperature^2 * KL(teacher || student), both
    distributions softened by the temperature (the T^2 keeps the soft term's gradient scale
    independent of T)."""

    teacher: str  # a trained tunelab run directory of the same task and labels
    temperature: float = Field(2.0, gt=0.0, le=100.0)
    alpha: float = Field(0.5, ge=0.0, le=1.0)  # weight of the teacher term; 0: labels only
    # cache: the teacher scores every training example once before training, with its own
    # tokenizer (any teacher of the task); on_the_fly: it reads each batch as the student
    # does (same tokenizer needed), which also covers data.augment's fresh copies
    teacher_logits: Literal["cache", "on_the_fly"] = "cache"
