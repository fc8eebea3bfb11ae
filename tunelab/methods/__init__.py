"""Fine-tuning methods: METHODS registry, apply, and saving what a method trained."""

from __future__ import annotations

from torch import nn

from tunelab.methods.base import ApplyReport, Method
from tunelab.methods.registry import METHODS
from tunelab.models.heads import head_modules
from tunelab.schema import StrictModel


def apply(model: nn.Module, cfg: StrictModel) -> ApplyReport:
    """Apply the configured method to `model` in place; the task head always trains."""
    method = METHODS[cfg.name]  # type: ignore[attr-defined]
    return method.apply(model, cfg, head_modules(model))


__all__ = ["METHODS", "Method", "ApplyReport", "apply", "head_modules"]
