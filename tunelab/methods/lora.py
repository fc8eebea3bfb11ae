"""LoRA: a trainable low-rank update B @ A added to frozen Linear layers (Hu et al., 2021).

Variants are not flags: rsLoRA is a scaling rule, PiSSA and gaussian are init functions,
DoRA is a subclass in dora.py.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods import targets as tgt
from tunelab.methods.base import (
    PEFT_PREFIX,
    AdapterMethod,
    ApplyReport,
    layers_of,
    refuse_unsupported,
    required,
)
from tunelab.methods.layer import AdaptedLinear
from tunelab.methods.lora_conv import LoraConv2d, check_conv
from tunelab.schema import StrictModel


class LoraOptions(StrictModel):
    """The settings LoRA and DoRA share; each config narrows `name`."""

    name: Literal["lora", "dora"]  # declared here to come first
    r: int = Field(8, ge=1, le=4096)
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] | str = tgt.ALL_LINEAR  # names/suffixes, a regex, or 'all-linear'
    scaling: Literal["standard", "rslora"] = "standard"  # alpha/r, or alpha/sqrt(r)
    init: Literal["default", "gaussian", "pissa"] = "default"
    # LoRA+ (Hayou et al., 2024): B trains at train.lr * this ratio (the paper suggests ~16)
    loraplus_lr_ratio: float | None = Field(None, ge=1.0)
    # per-layer r, as peft's rank_pattern: {module name or suffix: r}; other layers get r
    # (what `tunelab export --to lora` writes for an AdaLoRA run's final ranks)
    rank_pattern: dict[str, Annotated[int, Field(ge=1, le=4096)]] = {}

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str] | str) -> list[str] | str:
        return tgt.check_targets(v)

    @model_validator(mode="after")
    def _pattern_without_pissa(self) -> "LoraOptions":
        if self.rank_pattern and self.init == "pissa":
            raise ValueError("rank_pattern cannot be combined with init: pissa; drop one of them")
        return self


class LoraConfig(LoraOptions):
    name: Literal["lora"] = "lora"


def pattern_rank(pattern: dict[str, int], name: str, default: int) -> int:
    """peft's rule: the first key that matches the end of the module name (after a dot)."""
    for key, r in pattern.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return r
    return default


def lora_scaling(alpha: float, r: int, rule: str) -> float:
    return alpha / math.sqrt(r) if rule == "rslora" else alpha / r


class LoraLinear(AdaptedLinear):
    """Replaces an nn.Linear: y = x W^T + b + s * (dropout(x) A^T) B^T. One adapter, named
    `adapter_name`; several on one layer are multi_lora.py's MultiLoraLinear.

    A layer running as its base (adapters disabled, or its adapter not selected) has
    `forward` bound to `base_forward` on the instance: no per-call check in either path.
    """

    adapter_name: str = "default"  # the name of the adapter held in lora_A / lora_B

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float, scaling: str):
        super().__init__(base)
        self.r, self.alpha, self.scaling_rule = r, alpha, scaling
        self.scaling = lora_scaling(alpha, r, scaling)
        self.lora_A = nn.Linear(self.in_features, r, bias=False, **self.options())
        self.lora_B = nn.Linear(r, self.out_features, bias=False, **self.options())
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        init_default(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        out = F.linear(x2, self.linear_weight(), self.bias) if self.base_layer is None \
            else self.base_layer(x2)  # (N, out); a quantized base (model.quantize) computes itself
        down = F.linear(self.lora_dropout(x2), self.lora_A.weight)  # (N, r)
        # out += s * down B^T: one GEMM accumulating in place (the linear's backward does not
        # need its output), no scale, add or copy passes over the (N, out) activations
        up = self.lora_B.weight.T.to(out.dtype)  # (r, out); autocast leaves in-place ops alone
        out.addmm_(down.to(out.dtype), up, alpha=self.scaling)
        return out.view(*x.shape[:-1], self.out_features)

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly the replaced layer's forward (Conv1D's addmm for GPT-2 layers), so a
        disabled adapter gives the base model's outputs bit for bit."""
        if self.base_layer is not None:  # a quantized base
            return self.base_layer(x)
        if self.fan_in_fan_out:  # (..., in) -> (..., out), as transformers' Conv1D computes it
            out = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
            return out.view(x.shape[:-1] + (self.out_features,))
        return F.linear(x, self.weight, self.bias)

    def adapter_names(self) -> list[str]:
        return [self.adapter_name]

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """(A (r, in), B (out, r), scaling) of a named adapter, or None if the layer lacks it."""
        if name != self.adapter_name:
            return None
        return self.lora_A.weight, self.lora_B.weight, self.scaling

    def use_adapter(self, name: str | None) -> None:
        """Compute with adapter `name`; with None, or a name this layer lacks, as the base layer."""
        if name is not None and name == self.adapter_name:
            self.__dict__.pop("forward", None)  # the class's forward again
        else:
            self.__dict__["forward"] = self.base_forward

    def running_base(self) -> bool:
        """Whether the layer computes as its base (adapters off, or its adapter not selected)."""
        return "forward" in self.__dict__

    def finish_init(self) -> None:
        """Called after A and B are initialised; subclasses derive state from them (DoRA)."""

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, in)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The layer type it replaced (nn.Linear, or Conv1D) with the update in use folded in."""
        if self.running_base():
            return self.rebuilt(self.linear_weight(), self.bias)
        return self.rebuilt(self.linear_weight() + self.delta_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", r={self.r}, scaling={self.scaling:.4g}"


# ----------------------------------------------------------------------------- inits


@torch.no_grad()
def init_default(layer: LoraLinear) -> None:
    """A ~ Kaiming-uniform, B = 0: the update starts at exactly zero (PEFT's default)."""
    nn.init.kaiming_uniform_(layer.lora_A.weight, a=math.sqrt(5))
    nn.init.zeros_(layer.lora_B.weight)


@torch.no_grad()
def init_gaussian(layer: LoraLinear) -> None:
    """A ~ N(0, 1/r), B = 0 (PEFT's 'gaussian')."""
    nn.init.normal_(layer.lora_A.weight, std=1.0 / layer.r)
    nn.init.zeros_(layer.lora_B.weight)


@torch.no_grad()
def init_pissa(layer: LoraLinear) -> None:
    """PiSSA (Meng et al., 2024): A, B from the top-r singular vectors of W; W keeps the rest.

    The starting output equals the base model's. A0 and B0 are kept (not saved) so the
    adapter can be written as a plain LoRA delta against the original base weight.
    """
    if layer.fan_in_fan_out:
        raise MethodError("method.init: pissa does not support Conv1D (GPT-2) layers yet; "
                          "use init: default or gaussian")
    if layer.base_layer is not None:
        raise MethodError("method.init: pissa rewrites the base weight, which model.quantize "
                          "keeps quantized and frozen; use init: default or gaussian")
    w = layer.weight.float()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)  # (out, k), (k,), (k, in)
    sr = s[: layer.r] / layer.scaling
    a = torch.diag(sr.sqrt()) @ vh[: layer.r]  # (r, in)
    b = u[:, : layer.r] @ torch.diag(sr.sqrt())  # (out, r)
    dtype = layer.weight.dtype
    layer.lora_A.weight.copy_(a.to(dtype))
    layer.lora_B.weight.copy_(b.to(dtype))
    layer.weight = nn.Parameter((w - layer.scaling * b @ a).to(dtype), requires_grad=False)
    layer.register_buffer("pissa_A0", a.to(dtype).clone(), persistent=False)
    layer.register_buffer("pissa_B0", b.to(dtype).clone(), persistent=False)


INITS: dict[str, Callable[[LoraLinear], None]] = {
    "default": init_default, "gaussian": init_gaussian, "pissa": init_pissa,
}


# PEFT LoRA config keys we cannot honour yet, with the value that means "not used".
_UNSUPPORTED = {"alpha_pattern": {}, "layers_to_transform": None, "exclude_modules": None,
                "lora_bias": False, "bias": "none"}


class LoraMethod(AdapterMethod[LoraOptions]):
    name = "lora"
    config_cls: type[LoraOptions] = LoraConfig
    peft_type = "LORA"
    layer_cls: ClassVar[type[LoraLinear]] = LoraLinear
    use_dora: ClassVar[bool] = False

    @classmethod
    def apply(cls, model: nn.Module, cfg: LoraOptions, head: list[str]) -> ApplyReport:
        def make_layer(name: str, base: nn.Module) -> LoraLinear | LoraConv2d:
            r = pattern_rank(cfg.rank_pattern, name, cfg.r)
            if isinstance(base, nn.Conv2d):  # the layer per module type: Conv2d, else Linear
                layer: LoraLinear | LoraConv2d = conv_layer(cls, cfg, name, base, r)
            else:
                layer = cls.layer_cls(base, r, cfg.alpha, cfg.dropout, cfg.scaling)
            INITS[cfg.init](layer)  # type: ignore[arg-type]
            layer.finish_init()
            return layer

        out = tgt.inject(cls.name, model, cfg.targets, head, lambda _: make_layer,
                         extra=(nn.Conv2d,))
        rule = "alpha/sqrt(r)" if cfg.scaling == "rslora" else "alpha/r"
        ranks = f" ({len(cfg.rank_pattern)} layers by rank_pattern)" if cfg.rank_pattern else ""
        out.notes.append(f"r={cfg.r}{ranks}, alpha={cfg.alpha:g}, scaling {rule}, init "
                         f"{cfg.init}, dropout {cfg.dropout:g}")
        if cfg.loraplus_lr_ratio is not None:
            out.lr_scales = {f"{n}.lora_B.weight": cfg.loraplus_lr_ratio for n in out.matched}
            out.notes.append(f"LoRA+: lora_B trains at train.lr x {cfg.loraplus_lr_ratio:g}")
        return out

    # ------------------------------------------------------------------ PEFT adapter format
    @classmethod
    def reads(cls, config: dict[str, Any]) -> bool:
        return config.get("peft_type") == "LORA" and bool(config.get("use_dora")) == cls.use_dora

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: LoraOptions, head: list[str]) -> dict[str, Any]:
        layers = lora_and_conv_layers(model)
        pissa = any(hasattr(layer, "pissa_A0") for layer in layers.values())
        # PiSSA is written as a rank-2r delta against the original base (see adapter_tensors)
        r, alpha = (2 * cfg.r, cfg.alpha * (math.sqrt(2) if cfg.scaling == "rslora" else 2.0)) \
            if pissa else (cfg.r, cfg.alpha)
        return peft_lora_config(model, head, layers, r, alpha, cfg.dropout, cfg.scaling == "rslora",
                                cls.use_dora, dict(cfg.rank_pattern))

    @classmethod
    def adapter_tensors(cls, model: nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
        """PiSSA becomes a plain LoRA delta of rank 2r against the original base weight, as
        PEFT does on save: [A; A0] and [B, -B0]."""
        out: dict[str, torch.Tensor] = {}
        for name, layer in lora_and_conv_layers(model).items():
            a, b = layer.lora_A.weight, layer.lora_B.weight
            if hasattr(layer, "pissa_A0"):
                a = torch.cat([a, layer.pissa_A0], dim=0)  # (2r, in)
                b = torch.cat([b, -layer.pissa_B0], dim=1)  # (out, 2r)
            out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = a
            out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = b
            if hasattr(layer, "lora_magnitude_vector"):
                out[f"{PEFT_PREFIX}{name}.lora_magnitude_vector"] = layer.lora_magnitude_vector
        return out

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> LoraOptions:
        refuse_unsupported(config, _UNSUPPORTED, source)
        return cls.config_cls(r=required(config, "r", source),
                              alpha=required(config, "lora_alpha", source),
                              dropout=config.get("lora_dropout", 0.0),
                              targets=required(config, "target_modules", source),
                              scaling="rslora" if config.get("use_rslora") else "standard",
                              rank_pattern=config.get("rank_pattern") or {})


def peft_lora_config(model: nn.Module, head: list[str], layers: dict[str, LoraLinear], r: int,
                     alpha: float, dropout: float, rslora: bool, dora: bool,
                     rank_pattern: dict[str, int] | None = None) -> dict[str, Any]:
    """adapter_config.json's LoRA keys for an adapter on `layers` of `model`."""
    return {"r": r, "lora_alpha": alpha, "lora_dropout": dropout,
            "target_modules": tgt.peft_targets(model, list(layers), head),
            "use_rslora": rslora, "use_dora": dora, "init_lora_weights": True, "bias": "none",
            "fan_in_fan_out": any(layer.fan_in_fan_out for layer in layers.values()),
            "rank_pattern": rank_pattern or {}, "alpha_pattern": {}, "layers_to_transform": None,
            "layers_pattern": None}


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return layers_of(model, LoraLinear)


def lora_and_conv_layers(model: nn.Module) -> dict[str, Any]:
    """Every LoRA layer, Linear and Conv2d, in module order (what an adapter file holds)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (LoraLinear, LoraConv2d))}


def conv_layer(method: type[LoraMethod], cfg: LoraOptions, name: str, base: nn.Conv2d,
               r: int) -> LoraConv2d:
    """LoRA's layer for an nn.Conv2d target (lora_conv.py); DoRA and PiSSA are Linear-only."""
    if method.use_dora or cfg.init == "pissa":
        what = "dora" if method.use_dora else "init: pissa"
        raise MethodError(f"method.targets: {name} is a Conv2d; {what} supports Linear layers "
                          "only; use method.name: lora (init default or gaussian) or leave the "
                          "Conv2d layers out of method.targets")
    check_conv(name, base)
    return LoraConv2d(base, r, lora_scaling(cfg.alpha, r, cfg.scaling), cfg.dropout)
