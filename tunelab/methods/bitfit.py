"""BitFit (Ben Zaken et al., 2022): only the bias terms (and the task head) train."""

from __future__ import annotations

from typing import Literal

from torch import nn

from tunelab.errors import MethodError
from tunelab.methods.base import ApplyReport, Method, freeze_all, report, unfreeze
from tunelab.schema import StrictModel


class BitFitConfig(StrictModel):
    name: Literal["bitfit"] = "bitfit"


class BitFitMethod(Method[BitFitConfig]):
    name = "bitfit"
    config_cls = BitFitConfig

    @classmethod
    def apply(cls, model: nn.Module, cfg: BitFitConfig, head: list[str]) -> ApplyReport:
        freeze_all(model)
        biases = [n for n, p in model.named_parameters() if n.endswith(".bias")]
        if not biases:
            raise MethodError("method bitfit: this model has no bias parameters to train")
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.requires_grad_(True)
        unfreeze(model, head)
        return report(cls.name, model, [n.removesuffix(".bias") for n in biases], head)
