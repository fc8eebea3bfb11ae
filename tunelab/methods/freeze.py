"""Partial fine-tuning: train only the last N transformer layers and/or named modules."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods.base import (
    ApplyReport,
    Method,
    freeze_all,
    name_matches,
    report,
    unfreeze,
    unfreeze_all_in,
)
from tunelab.schema import StrictModel


class FreezeConfig(StrictModel):
    name: Literal["freeze"] = "freeze"
    train_last_layers: int = Field(2, ge=0)
    train_modules: list[str] = []  # module names or dotted suffixes, e.g. [pooler]


def layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks: the longest ModuleList of identical blocks."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(m) for m in module}) == 1 and (best is None or len(module) > len(best[1])):
                best = (name, module)
    if best is None:
        raise MethodError("method freeze: this model has no list of transformer layers; "
                          "use train_last_layers: 0 with train_modules")
    return best


class FreezeMethod(Method[FreezeConfig]):
    name = "freeze"
    config_cls = FreezeConfig

    @classmethod
    def apply(cls, model: nn.Module, cfg: FreezeConfig, head: list[str]) -> ApplyReport:
        freeze_all(model)
        chosen: list[str] = []
        if cfg.train_last_layers:
            stack_name, stack = layer_stack(model)
            if cfg.train_last_layers > len(stack):
                raise MethodError(f"method.train_last_layers: {cfg.train_last_layers} is more than "
                                  f"the model's {len(stack)} layers ({stack_name})")
            first = len(stack) - cfg.train_last_layers
            chosen += [f"{stack_name}.{i}" for i in range(first, len(stack))]
        names = [n for n, _ in model.named_modules() if n]
        for target in cfg.train_modules:
            hits = [n for n in names if name_matches(n, target)]
            if not hits:
                raise MethodError(f"method.train_modules: no module named '{target}'; top-level "
                                  f"modules: {', '.join(n for n in names if '.' not in n)}")
            chosen += hits
        unfreeze_all_in(model, chosen)
        unfreeze(model, head)
        return report(cls.name, model, chosen, head)
