"""LoRA: a trainable low-rank update B @ A added to frozen Linear layers (Hu et al., 2021).

Variants are not flags: rsLoRA is a scaling rule, PiSSA and gaussian are init functions,
DoRA is a subclass in dora.py.
"""

from __future__ import annotations

import math
import re
from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods import targets as tgt
from tunelab.methods.base import ApplyReport, Method, freeze_all, report, unfreeze
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


def lora_scaling(alpha: float, r: int, rule: str) -> float:
    return alpha / math.sqrt(r) if rule == "rslora" else alpha / r


class LoraLinear(nn.Module):
    """Replaces an nn.Linear: y = x W^T + b + s * (dropout(x) A^T) B^T.

    Owns the frozen base weight and bias (same Parameter objects as the layer it replaced),
    so the base keys keep their names in the model's state dict.
    """

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
        out = F.linear(x, self.linear_weight(), self.bias)
        update = self.lora_B(self.lora_A(self.lora_dropout(x)))  # (..., r) -> (..., out)
        return out + update * self.scaling

    def linear_weight(self) -> torch.Tensor:
        """The base weight as (out, in), a view for Conv1D layers."""
        return self.weight.T if self.fan_in_fan_out else self.weight

    def finish_init(self) -> None:
        """Called after A and B are initialised; subclasses derive state from them (DoRA)."""

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling  # (out, in)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The layer type it replaced (nn.Linear, or Conv1D) with the update folded in."""
        merged = self.linear_weight() + self.delta_weight()  # (out, in)
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


class LoraMethod(Method):
    name = "lora"
    config_cls = LoraConfig
    saves_adapter = True
    layer_cls: ClassVar[type[LoraLinear]] = LoraLinear

    @classmethod
    def apply(cls, model: nn.Module, cfg: LoraConfig, head: list[str]) -> ApplyReport:  # type: ignore[override]
        chosen = tgt.select(model, cfg.targets, exclude=head)
        freeze_all(model)
        for name in chosen:
            layer = cls.layer_cls(model.get_submodule(name), cfg.r, cfg.alpha, cfg.dropout,
                                  cfg.scaling)
            INITS[cfg.init](layer)
            layer.finish_init()
            layer.weight.requires_grad_(False)
            if layer.bias is not None:
                layer.bias.requires_grad_(False)
            tgt.replace_module(model, name, layer)
        unfreeze(model, head)
        rule = "alpha/sqrt(r)" if cfg.scaling == "rslora" else "alpha/r"
        note = f"r={cfg.r}, alpha={cfg.alpha:g}, scaling {rule}, init {cfg.init}, dropout {cfg.dropout:g}"
        out = report(cls.name, model, chosen, head, [note])
        if cfg.loraplus_lr_ratio is not None:
            out.lr_scales = {f"{n}.lora_B.weight": cfg.loraplus_lr_ratio for n in chosen}
            out.notes.append(f"LoRA+: lora_B trains at train.lr x {cfg.loraplus_lr_ratio:g}")
        return out


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}

