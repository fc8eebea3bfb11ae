"""Bottleneck adapters: a small trainable MLP on the output of a sublayer's output projection.

    h = x W^T + b                       the projection's output (..., d)
    y = h + up(act(down(h)))            down: d -> d / reduction_factor, up: back to d

inserted before the sublayer's dropout, residual and norm. Houlsby et al. (2019) put one
after the attention block and one after the feed-forward block of every layer; Pfeiffer et
al. (2021) only after the feed-forward block. `up` starts at 0, so the model starts as the
base. The non-linearity makes them unmergeable.

peft has no such method, so the adapter is saved in tunelab's own format: the PEFT directory
layout and key naming (adapter_model.safetensors with base_model.model.<layer>.adapter_down
.weight ..., plus the head), but the settings in tunelab_adapter.json rather than
adapter_config.json, so no PEFT tool mistakes it for one of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, TypeVar

import torch
from pydantic import Field, field_validator
from torch import nn

from tunelab.methods import targets as tgt
from tunelab.methods.base import AdapterMethod, ApplyReport, layers_of, required
from tunelab.methods.layer import AdaptedLinear
from tunelab.schema import StrictModel

CONFIG_FILE = "tunelab_adapter.json"
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU,
                                           "tanh": nn.Tanh}
# The output projection of each attention / feed-forward block, per model type (full-name regexes).
ATTENTION_OUT: dict[str, list[str]] = {
    "bert": [r".*\.attention\.output\.dense"], "roberta": [r".*\.attention\.output\.dense"],
    "gpt2": [r".*\.attn\.c_proj"],
    **{k: [r".*\.self_attn\.o_proj"] for k in ("llama", "mistral", "qwen2", "qwen3", "gemma",
                                                "gemma2")},
}
FFN_OUT: dict[str, list[str]] = {
    "bert": [r".*\.layer\.\d+\.output\.dense"], "roberta": [r".*\.layer\.\d+\.output\.dense"],
    "gpt2": [r".*\.mlp\.c_proj"],
    **{k: [r".*\.mlp\.down_proj"] for k in ("llama", "mistral", "qwen2", "qwen3", "gemma",
                                             "gemma2")},
}


class BottleneckConfig(StrictModel):
    name: Literal["houlsby", "pfeiffer"]  # narrowed by each subclass; declared here to come first
    reduction_factor: int = Field(16, ge=1, le=4096)  # bottleneck size = d / reduction_factor
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    targets: list[str] | str = tgt.AUTO  # 'auto': the method's placement; or names, a regex

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str] | str) -> list[str] | str:
        return tgt.check_targets(v, (tgt.AUTO,))


class HoulsbyConfig(BottleneckConfig):
    name: Literal["houlsby"] = "houlsby"
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = "silu"  # AdapterHub's default (swish)


class PfeifferConfig(BottleneckConfig):
    name: Literal["pfeiffer"] = "pfeiffer"


class BottleneckLinear(AdaptedLinear):
    """Replaces an output projection: y = h + up(act(down(h))), h = x W^T + b."""

    mergeable = False

    def __init__(self, base: nn.Module, reduction_factor: int, non_linearity: str):
        super().__init__(base)
        size = max(1, self.out_features // reduction_factor)
        w = self.weight
        self.adapter_down = nn.Linear(self.out_features, size, device=w.device, dtype=w.dtype)
        self.adapter_act = ACTIVATIONS[non_linearity]()
        self.adapter_up = nn.Linear(size, self.out_features, device=w.device, dtype=w.dtype)
        with torch.no_grad():  # small random down, zero up: the adapter starts as the identity
            nn.init.normal_(self.adapter_down.weight, std=0.02)
            nn.init.zeros_(self.adapter_down.bias)
            nn.init.zeros_(self.adapter_up.weight)
            nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        h = self.base_forward(x)  # (..., out)
        return h + self.adapter_up(self.adapter_act(self.adapter_down(h)))  # via (..., size)

    def merged(self) -> nn.Module:
        raise NotImplementedError("a bottleneck adapter is non-linear and cannot be merged")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", bottleneck={self.adapter_down.out_features}"


BC = TypeVar("BC", bound=BottleneckConfig)


class BottleneckMethod(AdapterMethod[BC]):
    peft_type = "BOTTLENECK"  # tunelab's own; not a peft type
    config_file = CONFIG_FILE
    placement: ClassVar[tuple[dict[str, list[str]], ...]]

    @classmethod
    def apply(cls, model: nn.Module, cfg: BC, head: list[str]) -> ApplyReport:
        targets = cfg.targets
        if targets == tgt.AUTO:
            patterns = [p for table in cls.placement for p in tgt.auto_targets(
                model, table, cls.name, example="[o_proj, down_proj]")]
            targets = "|".join(f"(?:{p})" for p in patterns)

        def make_layer(_: str, base: nn.Module) -> BottleneckLinear:
            return BottleneckLinear(base, cfg.reduction_factor, cfg.non_linearity)

        out = tgt.inject(cls.name, model, targets, head, lambda _: make_layer)
        sizes = sorted({m.adapter_down.out_features for m in layers_of(model, BottleneckLinear).values()})
        out.notes.append(f"bottleneck size {', '.join(map(str, sizes))} (reduction factor "
                         f"{cfg.reduction_factor}), {cfg.non_linearity}; not mergeable")
        return out

    @classmethod
    def reads(cls, config: dict[str, Any]) -> bool:
        return config.get("peft_type") == cls.peft_type and config.get("method") == cls.name

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: BC, head: list[str]) -> dict[str, Any]:
        chosen = list(layers_of(model, BottleneckLinear))
        return {"format": "tunelab", "method": cls.name,
                "target_modules": tgt.peft_targets(model, chosen, head),
                "reduction_factor": cfg.reduction_factor, "non_linearity": cfg.non_linearity}

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> BC:
        return cls.config_cls(targets=required(config, "target_modules", source),
                              reduction_factor=required(config, "reduction_factor", source),
                              non_linearity=required(config, "non_linearity", source))


class HoulsbyMethod(BottleneckMethod[HoulsbyConfig]):
    name = "houlsby"
    config_cls = HoulsbyConfig
    placement = (ATTENTION_OUT, FFN_OUT)


class PfeifferMethod(BottleneckMethod[PfeifferConfig]):
    name = "pfeiffer"
    config_cls = PfeifferConfig
    placement = (FFN_OUT,)
