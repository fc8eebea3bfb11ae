"""What LoHa and LoKr share (the LyCORIS family, as peft implements it): a weight update
built from small factors, added to a frozen nn.Linear, with peft's rank and module dropout.

    y = x W^T + b + x dW^T,   dW = scale * f(factors),   scale = alpha / r

Training-only regularisers, as in peft: `module_dropout` skips the whole update for a step
with that probability; `rank_dropout` zeroes that share of dW's output rows (rescaled by the
kept share for LoHa, and for LoKr when `rank_dropout_scale` is set).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods import targets as tgt
from tunelab.methods.base import AdapterMethod, ApplyReport, layers_of, refuse_unsupported, required
from tunelab.methods.layer import AdaptedLinear
from tunelab.schema import StrictModel

# peft LoHa/LoKr config keys we cannot honour, with the value that means "not used"
_UNSUPPORTED = {"rank_pattern": {}, "alpha_pattern": {}, "exclude_modules": None,
                "layers_to_transform": None}


class LycorisConfig(StrictModel):
    name: Literal["loha", "lokr"]  # narrowed by each subclass; declared here to come first
    r: int = Field(8, ge=1, le=4096)
    alpha: float = Field(8.0, gt=0.0)  # scale = alpha / r (peft's defaults: r = alpha = 8)
    rank_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    module_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] | str = tgt.ALL_LINEAR

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str] | str) -> list[str] | str:
        return tgt.check_targets(v)


class LycorisLinear(AdaptedLinear):
    """Replaces an nn.Linear; subclasses create the factors and say how they make dW."""

    rank_dropout_scale: bool = True

    def __init__(self, base: nn.Module, cfg: LycorisConfig):
        super().__init__(base)
        self.r, self.alpha = cfg.r, cfg.alpha
        self.scaling = cfg.alpha / cfg.r
        self.rank_dropout, self.module_dropout = cfg.rank_dropout, cfg.module_dropout

    def delta_weight(self) -> torch.Tensor:
        """dW as (out, in), scale included."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        out = self.base_forward(x)
        # peft draws this in every training step, even at 0: seeded runs then match it draw for draw
        if self.training and torch.rand(1).item() <= self.module_dropout:
            return out  # this step trains without the update (module dropout)
        delta = self.delta_weight()  # (out, in)
        if self.training and self.rank_dropout:
            keep = (torch.rand(delta.shape[0]) > self.rank_dropout).to(delta)  # (out,)
            if self.rank_dropout_scale:
                keep = keep / keep.mean()
            delta = delta * keep.unsqueeze(1)
        return out + F.linear(x, delta)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        return self.rebuilt(self.linear_weight() + self.delta_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", r={self.r}, scaling={self.scaling:.4g}"


LC = TypeVar("LC", bound=LycorisConfig)


class LycorisMethod(AdapterMethod[LC]):
    layer_cls: ClassVar[type[LycorisLinear]]

    @classmethod
    def apply(cls, model: nn.Module, cfg: LC, head: list[str]) -> ApplyReport:
        def layers_for(chosen: list[str]) -> tgt.LayerFactory:
            conv1d = [n for n in chosen if not isinstance(model.get_submodule(n), nn.Linear)]
            if conv1d:
                raise MethodError(f"method {cls.name}: {conv1d[0]} is a GPT-2 style Conv1D layer; "
                                  f"peft's {cls.peft_type} adapts nn.Linear only, so its adapter "
                                  "would not load there; use lora, ia3 or vera for this model")
            return lambda _, base: cls.layer_cls(base, cfg)

        out = tgt.inject(cls.name, model, cfg.targets, head, layers_for)
        out.notes += [f"r={cfg.r}, alpha={cfg.alpha:g} (scale {cfg.alpha / cfg.r:.4g}), rank "
                      f"dropout {cfg.rank_dropout:g}, module dropout {cfg.module_dropout:g}",
                      *cls.notes(model)]
        return out

    @classmethod
    def notes(cls, model: nn.Module) -> list[str]:
        return []

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: LC, head: list[str]) -> dict[str, Any]:
        chosen = list(layers_of(model, cls.layer_cls))
        return {"r": cfg.r, "alpha": cfg.alpha, "rank_dropout": cfg.rank_dropout,
                "module_dropout": cfg.module_dropout,
                "target_modules": tgt.peft_targets(model, chosen, head),
                "init_weights": True, "use_effective_conv2d": False, "rank_pattern": {},
                "alpha_pattern": {}, "exclude_modules": None, "layers_to_transform": None,
                "layers_pattern": None}

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> LC:
        refuse_unsupported(config, _UNSUPPORTED, source)
        return cls.config_cls(r=required(config, "r", source),
                              alpha=required(config, "alpha", source),
                              rank_dropout=config.get("rank_dropout", 0.0),
                              module_dropout=config.get("module_dropout", 0.0),
                              targets=required(config, "target_modules", source),
                              **cls.own_options(config))

    @classmethod
    def own_options(cls, config: dict[str, Any]) -> dict[str, Any]:
        """The subclass's own config keys, read from a peft adapter config."""
        return {}
