"""(IA)^3 (Liu et al., 2022): learned vectors that rescale keys, values and feed-forward activations.

A targeted layer's output is multiplied by a vector l (out,); a feed-forward layer's input is
multiplied instead (l of size in), which scales the FFN's inner activation as in the paper.
l starts at 1, so the model starts as the base, and folds into W (and b) on merge. Math,
parameter names (`ia3_l`, shaped (out, 1) or (1, in)) and defaults follow peft's IA3.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from pydantic import ValidationInfo, field_validator
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods import targets as tgt
from tunelab.methods.base import AdapterMethod, ApplyReport, layers_of, refuse_unsupported, required
from tunelab.methods.layer import AdaptedLinear
from tunelab.schema import StrictModel

# peft 0.21's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING and ..._FEEDFORWARD_MODULES_MAPPING
# for the model types tunelab loads (tests/test_ia3.py checks they still agree with peft).
# BERT's 'output.dense' also matches attention.output.dense: peft scales its input as well.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["key", "value", "output.dense"], "roberta": ["key", "value", "output.dense"],
    "deberta-v2": ["key_proj", "value_proj", "output.dense"], "gpt2": ["c_attn", "mlp.c_proj"],
    "llama": ["k_proj", "v_proj", "down_proj"], "mistral": ["k_proj", "v_proj", "down_proj"],
    "qwen2": ["q_proj", "v_proj", "down_proj"], "qwen3": ["q_proj", "v_proj", "down_proj"],
    "gemma": ["q_proj", "v_proj", "down_proj"], "gemma2": ["q_proj", "v_proj", "down_proj"],
    "phi": ["q_proj", "v_proj", "fc2"], "opt": ["q_proj", "k_proj", "fc2"],
}
DEFAULT_FEEDFORWARD: dict[str, list[str]] = {
    "bert": ["output.dense"], "roberta": ["output.dense"], "deberta-v2": ["output.dense"],
    "gpt2": ["mlp.c_proj"], "llama": ["down_proj"], "mistral": ["down_proj"],
    "qwen2": ["down_proj"], "qwen3": ["down_proj"], "gemma": ["down_proj"],
    "gemma2": ["down_proj"], "phi": ["fc2"], "opt": ["fc2"],
}


class IA3Config(StrictModel):
    name: Literal["ia3"] = "ia3"
    targets: list[str] | str = tgt.AUTO  # 'auto' (peft's defaults), names/suffixes, a regex, 'all-linear'
    feedforward: list[str] | str = tgt.AUTO  # targets scaled at their input: 'auto', names, a regex

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str] | str) -> list[str] | str:
        return tgt.check_targets(v, (tgt.AUTO, tgt.ALL_LINEAR))

    @field_validator("feedforward")
    @classmethod
    def _check_feedforward(cls, v: list[str] | str, info: ValidationInfo) -> list[str] | str:
        if isinstance(v, list):  # [] is allowed: no layer is feed-forward
            if any(not t.strip() for t in v):
                raise ValueError("module names must not be empty")
            targets = info.data.get("targets")
            outside = [t for t in v if isinstance(targets, list) and t not in targets]
            if outside:
                raise ValueError(f"{', '.join(outside)} not in method.targets; a feed-forward "
                                 "layer must also be a target (as in peft)")
            return v
        return tgt.check_targets(v, (tgt.AUTO,))


def is_feedforward(name: str, feedforward: list[str] | str) -> bool:
    """peft's rule: a regex must match the whole name; a list entry is a plain string suffix."""
    if isinstance(feedforward, str):
        return re.fullmatch(feedforward, name) is not None
    return any(name.endswith(t) for t in feedforward)


class IA3Linear(AdaptedLinear):
    """Replaces an nn.Linear: y = (x W^T + b) * l, or y = (x * l) W^T + b for feed-forward layers."""

    def __init__(self, base: nn.Module, feedforward: bool):
        super().__init__(base)
        self.is_feedforward = feedforward
        shape = (1, self.in_features) if feedforward else (self.out_features, 1)
        self.ia3_l = self.new_parameter(*shape)
        nn.init.ones_(self.ia3_l)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        scale = self.ia3_l.flatten()  # (in,) or (out,)
        if self.is_feedforward:
            return self.base_forward(x * scale)
        return self.base_forward(x) * scale

    @torch.no_grad()
    def merged(self) -> nn.Module:
        weight = self.linear_weight() * self.ia3_l  # (out, in) * (out, 1) or (1, in)
        bias = self.bias
        if bias is not None and not self.is_feedforward:
            bias = bias * self.ia3_l.flatten()
        return self.rebuilt(weight, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", feedforward={self.is_feedforward}"


class IA3Method(AdapterMethod[IA3Config]):
    name = "ia3"
    config_cls = IA3Config
    peft_type = "IA3"

    @classmethod
    def apply(cls, model: nn.Module, cfg: IA3Config, head: list[str]) -> ApplyReport:
        targets = tgt.auto_targets(model, DEFAULT_TARGETS, "ia3") if cfg.targets == tgt.AUTO \
            else cfg.targets
        feedforward = cfg.feedforward
        if feedforward == tgt.AUTO:
            feedforward = tgt.auto_targets(model, DEFAULT_FEEDFORWARD, "ia3", "method.feedforward")

        def layers_for(chosen: list[str]) -> tgt.LayerFactory:
            if isinstance(cfg.feedforward, list):  # names the user gave must mean something
                unused = [f for f in cfg.feedforward
                          if not any(is_feedforward(n, [f]) for n in chosen)]
                if unused:
                    raise MethodError(f"method.feedforward: {', '.join(unused)} matches none of the "
                                      f"{len(chosen)} targeted layers; list names of targeted layers")
            return lambda name, base: IA3Linear(base, is_feedforward(name, feedforward))

        out = tgt.inject(cls.name, model, targets, head, layers_for)
        n_ff = sum(m.is_feedforward for m in ia3_layers(model).values())
        out.notes.append(f"feed-forward layers (input scaled): {n_ff} of {len(out.matched)}")
        return out

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: IA3Config, head: list[str]) -> dict[str, Any]:
        layers = ia3_layers(model)
        targets, feedforward = _peft_names(model, layers, head)
        return {"target_modules": targets, "feedforward_modules": feedforward,
                "fan_in_fan_out": any(m.fan_in_fan_out for m in layers.values()),
                "init_ia3_weights": True, "exclude_modules": None}

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> IA3Config:
        refuse_unsupported(config, {"exclude_modules": None}, source)
        return IA3Config(targets=required(config, "target_modules", source),
                         feedforward=config.get("feedforward_modules") or [])


def ia3_layers(model: nn.Module) -> dict[str, IA3Linear]:
    return layers_of(model, IA3Linear)


def _peft_names(model: nn.Module, layers: dict[str, IA3Linear], head: list[str]
                ) -> tuple[list[str], list[str]]:
    """target_modules and feedforward_modules for adapter_config.json. peft wants the second a
    subset of the first and matches it by plain suffix, so short names are used only when
    they pick exactly the same layers; otherwise full module names."""
    chosen = list(layers)
    feedforward = [n for n, m in layers.items() if m.is_feedforward]
    targets = tgt.peft_targets(model, chosen, head)
    if targets != chosen:
        short = sorted({n.rsplit(".", 1)[-1] for n in feedforward})
        if set(short) <= set(targets) and [n for n in chosen if is_feedforward(n, short)] == feedforward:
            return targets, short
    if [n for n in chosen if is_feedforward(n, feedforward)] != feedforward:
        raise MethodError("ia3: these feed-forward layers cannot be named for peft (one module "
                          "name ends with another); choose targets by full names")
    return chosen, feedforward
