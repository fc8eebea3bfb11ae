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
    AdapterLayer,
    AdapterMethod,
    ApplyReport,
    freeze_all,
    refuse_unsupported,
    report,
    required,
    unfreeze,
)
from tunelab.schema import StrictModel


class LoraConfig(StrictModel):
    name: Literal["lora"] = "lora"
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
        if isinstance(v, list):
            if not v or any(not t.strip() for t in v):
                raise ValueError("give at least one module name, a regex, or 'all-linear'")
            return v
        if v != tgt.ALL_LINEAR:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regex ({exc})") from None
        return v

    @model_validator(mode="after")
    def _pattern_without_pissa(self) -> "LoraConfig":
        if self.rank_pattern and self.init == "pissa":
            raise ValueError("rank_pattern cannot be combined with init: pissa; drop one of them")
        return self


def pattern_rank(pattern: dict[str, int], name: str, default: int) -> int:
    """peft's rule: the first key that matches the end of the module name (after a dot)."""
    for key, r in pattern.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return r
    return default


def lora_scaling(alpha: float, r: int, rule: str) -> float:
    return alpha / math.sqrt(r) if rule == "rslora" else alpha / r


class LoraSlot(nn.Module):
    """One named adapter's A, B and dropout at a layer, kept aside while another is in use."""

    def __init__(self, lora_A: nn.Linear, lora_B: nn.Linear, lora_dropout: nn.Module, r: int,
                 alpha: float, scaling_rule: str):
        super().__init__()
        self.lora_A, self.lora_B, self.lora_dropout = lora_A, lora_B, lora_dropout
        self.r, self.alpha, self.scaling_rule = r, alpha, scaling_rule


class LoraLinear(AdapterLayer):
    """Replaces an nn.Linear: y = x W^T + b + s * (dropout(x) A^T) B^T.

    Owns the frozen base weight and bias (same Parameter objects as the layer it replaced),
    so the base keys keep their names in the model's state dict.

    Several named adapters may share the layer (multi_adapter.py): the one in use sits in
    lora_A / lora_B (so a single adapter keeps its PEFT names and its plain forward), the
    others wait in `lora_stash` and are swapped in by `use_adapter`. A layer running as its
    base (adapters disabled, or none of its adapters selected) has `forward` bound to
    `base_forward` on the instance: no per-call check in either path.
    """

    adapter_name: str = "default"  # the name of the adapter held in lora_A / lora_B

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float, scaling: str):
        super().__init__()
        # transformers' Conv1D (GPT-2) stores its weight as (in, out): "fan in, fan out"
        self.fan_in_fan_out = not isinstance(base, nn.Linear)
        self.out_features, self.in_features = base.weight.shape[::-1] if self.fan_in_fan_out \
            else base.weight.shape
        self.weight = base.weight
        self.bias = base.bias
        self.r, self.alpha, self.scaling_rule = r, alpha, scaling
        self.scaling = lora_scaling(alpha, r, scaling)
        w = base.weight
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=w.device, dtype=w.dtype)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=w.device, dtype=w.dtype)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        init_default(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        out = F.linear(x2, self.linear_weight(), self.bias)  # (N, out)
        down = F.linear(self.lora_dropout(x2), self.lora_A.weight)  # (N, r)
        # out += s * down B^T: one GEMM accumulating in place (the linear's backward does not
        # need its output), no scale, add or copy passes over the (N, out) activations
        up = self.lora_B.weight.T.to(out.dtype)  # (r, out); autocast leaves in-place ops alone
        out.addmm_(down.to(out.dtype), up, alpha=self.scaling)
        return out.view(*x.shape[:-1], self.out_features)

    def linear_weight(self) -> torch.Tensor:
        """The base weight as (out, in), a view for Conv1D layers."""
        return self.weight.T if self.fan_in_fan_out else self.weight

    def base_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exactly the replaced layer's forward (Conv1D's addmm for GPT-2 layers)."""
        if self.fan_in_fan_out:  # (..., in) -> (..., out), as transformers' Conv1D computes it
            out = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
            return out.view(x.shape[:-1] + (self.out_features,))
        return F.linear(x, self.weight, self.bias)

    # ------------------------------------------------------------- several named adapters
    def adapter_names(self) -> list[str]:
        stash = self._modules.get("lora_stash")
        return [self.adapter_name, *(stash.keys() if stash is not None else ())]

    def stash_adapter(self, name: str, slot: LoraSlot) -> None:
        if "lora_stash" not in self._modules:
            self.lora_stash = nn.ModuleDict()
        self.lora_stash[name] = slot

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """(A (r, in), B (out, r), scaling) of a named adapter, or None if the layer lacks it."""
        if name == self.adapter_name:
            return self.lora_A.weight, self.lora_B.weight, self.scaling
        stash = self._modules.get("lora_stash")
        if stash is None or name not in stash:
            return None
        slot = stash[name]
        return slot.lora_A.weight, slot.lora_B.weight, lora_scaling(slot.alpha, slot.r, slot.scaling_rule)

    def use_adapter(self, name: str | None) -> None:
        """Compute with adapter `name`; with None, or a name this layer lacks, as the base layer."""
        if name is not None and name != self.adapter_name and name in self.adapter_names():
            held = LoraSlot(self.lora_A, self.lora_B, self.lora_dropout, self.r, self.alpha,
                            self.scaling_rule)
            slot = self.lora_stash.pop(name)
            self.lora_stash[self.adapter_name] = held
            self.lora_A, self.lora_B, self.lora_dropout = slot.lora_A, slot.lora_B, slot.lora_dropout
            self.r, self.alpha, self.scaling_rule = slot.r, slot.alpha, slot.scaling_rule
            self.scaling = lora_scaling(slot.alpha, slot.r, slot.scaling_rule)
            self.adapter_name = name
        if name is not None and name == self.adapter_name:
            self.__dict__.pop("forward", None)  # the class's forward again
        else:
            self.forward = self.base_forward  # type: ignore[method-assign]

    def finish_init(self) -> None:
        """Called after A and B are initialised; subclasses derive state from them (DoRA)."""

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, in)

    def running_base(self) -> bool:
        """Whether the layer computes as its base (adapters off, or its adapter not selected)."""
        return "forward" in self.__dict__

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The layer type it replaced (nn.Linear, or Conv1D) with the update in use folded in."""
        if self.running_base():
            return self.rebuilt(self.linear_weight())
        return self.rebuilt(self.linear_weight() + self.delta_weight())

    @torch.no_grad()
    def rebuilt(self, merged: torch.Tensor) -> nn.Module:
        """The layer type it replaced (nn.Linear, or Conv1D) holding `merged` (out, in)."""
        if self.fan_in_fan_out:
            from transformers.pytorch_utils import Conv1D

            layer = Conv1D(self.out_features, self.in_features).to(self.weight)
            layer.weight.copy_(merged.T)
        else:
            layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                              device=self.weight.device, dtype=self.weight.dtype)
            layer.weight.copy_(merged)
        if self.bias is not None:
            layer.bias.copy_(self.bias)
        return layer

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, "
                f"scaling={self.scaling:.4g}")


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


class LoraMethod(AdapterMethod):
    name = "lora"
    config_cls = LoraConfig
    peft_type = "LORA"
    layer_cls: ClassVar[type[LoraLinear]] = LoraLinear
    use_dora: ClassVar[bool] = False

    @classmethod
    def apply(cls, model: nn.Module, cfg: LoraConfig, head: list[str]) -> ApplyReport:  # type: ignore[override]
        chosen = tgt.select(model, cfg.targets, exclude=head)
        freeze_all(model)
        for name in chosen:
            r = pattern_rank(cfg.rank_pattern, name, cfg.r)
            layer = cls.layer_cls(model.get_submodule(name), r, cfg.alpha, cfg.dropout, cfg.scaling)
            INITS[cfg.init](layer)
            layer.finish_init()
            layer.weight.requires_grad_(False)
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
            tgt.replace_module(model, name, layer)
        unfreeze(model, head)
        rule = "alpha/sqrt(r)" if cfg.scaling == "rslora" else "alpha/r"
        ranks = f" ({len(cfg.rank_pattern)} layers by rank_pattern)" if cfg.rank_pattern else ""
        note = (f"r={cfg.r}{ranks}, alpha={cfg.alpha:g}, scaling {rule}, init {cfg.init}, "
                f"dropout {cfg.dropout:g}")
        out = report(cls.name, model, chosen, head, [note])
        if cfg.loraplus_lr_ratio is not None:
            out.lr_scales = {f"{n}.lora_B.weight": cfg.loraplus_lr_ratio for n in chosen}
            out.notes.append(f"LoRA+: lora_B trains at train.lr x {cfg.loraplus_lr_ratio:g}")
        return out

    # ------------------------------------------------------------------ PEFT adapter format
    @classmethod
    def reads(cls, config: dict[str, Any]) -> bool:
        return config.get("peft_type") == "LORA" and bool(config.get("use_dora")) == cls.use_dora

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: LoraConfig, head: list[str]) -> dict[str, Any]:  # type: ignore[override]
        layers = lora_layers(model)
        pissa = any(hasattr(layer, "pissa_A0") for layer in layers.values())
        # PiSSA is written as a rank-2r delta against the original base (see adapter_tensors)
        r, alpha = (2 * cfg.r, cfg.alpha * (math.sqrt(2) if cfg.scaling == "rslora" else 2.0)) \
            if pissa else (cfg.r, cfg.alpha)
        return peft_lora_config(model, head, layers, r, alpha, cfg.dropout, cfg.scaling == "rslora",
                                cls.use_dora,
                                dict(cfg.rank_pattern))

    @classmethod
    def adapter_tensors(cls, model: nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
        """PiSSA becomes a plain LoRA delta of rank 2r against the original base weight, as
        PEFT does on save: [A; A0] and [B, -B0]."""
        out: dict[str, torch.Tensor] = {}
        for name, layer in lora_layers(model).items():
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
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> LoraConfig:  # type: ignore[override]
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
            "target_modules": tgt.compact(list(layers), tgt.linear_names(model, head, (AdapterLayer,))),
            "use_rslora": rslora, "use_dora": dora, "init_lora_weights": True, "bias": "none",
            "fan_in_fan_out": any(layer.fan_in_fan_out for layer in layers.values()),
            "rank_pattern": rank_pattern or {}, "alpha_pattern": {}, "layers_to_transform": None,
            "layers_pattern": None}


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}

