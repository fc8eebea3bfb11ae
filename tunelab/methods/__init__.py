"""Fine-tuning methods: METHODS registry, apply, and saving what a method trained."""

from __future__ import annotations

from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import ApplyReport, Method
from tunelab.methods.registry import METHODS
from tunelab.models.heads import head_modules
from tunelab.schema import StrictModel


def apply(model: nn.Module, cfg: StrictModel, head_lr_scale: float = 1.0) -> ApplyReport:
    """Apply the configured method to `model` in place; the task head always trains, at
    train.lr x `head_lr_scale` (a freshly initialised head can take a larger step than the
    adapter; under DP-SGD it is what moves the score most for the noise added)."""
    method = METHODS[cfg.name]  # type: ignore[attr-defined]
    report = method.apply(model, cfg, head_modules(model))
    if head_lr_scale != 1.0:
        prefixes = tuple(f"{h}." for h in report.head)
        names = [n for n, p in model.named_parameters()
                 if p.requires_grad and n.startswith(prefixes)]  # () matches nothing
        if not names:
            raise ConfigError(f"train.head_lr_scale is {head_lr_scale:g}, but this model has no "
                              "separate task head to scale (a language model's output layer is "
                              "its vocabulary); remove train.head_lr_scale")
        report.lr_scales.update({n: head_lr_scale for n in names})
        report.notes.append(f"task head trains at train.lr x {head_lr_scale:g} "
                            f"({len(names)} tensors)")
    return report


__all__ = ["METHODS", "Method", "ApplyReport", "apply", "head_modules"]
