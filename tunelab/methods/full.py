"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from typing import Literal

from torch import nn

from tunelab.methods.base import ApplyReport, Method, report
from tunelab.schema import StrictModel


class FullConfig(StrictModel):
    name: Literal["full"] = "full"


class FullMethod(Method[FullConfig]):
    name = "full"
    config_cls = FullConfig

    @classmethod
    def apply(cls, model: nn.Module, cfg: FullConfig, head: list[str]) -> ApplyReport:
        for p in model.parameters():
            p.requires_grad_(True)
        return report(cls.name, model, ["(all modules)"], head)
