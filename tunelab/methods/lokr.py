"""LoKr (Edalati et al., 2022; LyCORIS): the update is a Kronecker product of two small factors.

    dW = alpha / r * kron(W1, W2)     W1: (out_l, in_m), W2: (out_k, in_n)
    out = out_l * out_k, in = in_m * in_n  (each split near its square root, or by decompose_factor)

A factor is itself low-rank (W = Wa @ Wb, rank r) when r is below half its larger side (for W1
only with decompose_both), exactly as peft decides, so parameter names (lokr_w1 or lokr_w1_a /
lokr_w1_b, ...) and shapes match peft's. Default init zeroes W1, so the model starts as the
base; init 'lycoris' zeroes W2 instead (peft's init_weights="lycoris"). nn.Linear layers only.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import field_validator
from torch import nn

from tunelab.methods.lycoris import LycorisConfig, LycorisLinear, LycorisMethod


class LokrConfig(LycorisConfig):
    name: Literal["lokr"] = "lokr"
    decompose_both: bool = False  # also make W1 low-rank when r is small enough
    decompose_factor: int = -1  # -1: split each dimension near its square root
    rank_dropout_scale: bool = False  # rescale kept rows by the kept share (peft's default: no)
    init: Literal["default", "lycoris"] = "default"  # which factor starts at 0: W1, or W2

    @field_validator("decompose_factor")
    @classmethod
    def _check_factor(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be -1 (split near the square root) or a positive divisor")
        return v


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """(m, n) with m * n = dimension and m <= n: peft's split (m = factor when it divides,
    else the divisor pair nearest the square root that keeps m <= factor)."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    return (n, m) if m > n else (m, n)


class LokrLinear(LycorisLinear):
    def __init__(self, base: nn.Module, cfg: LokrConfig):
        super().__init__(base, cfg)
        self.rank_dropout_scale = cfg.rank_dropout_scale
        in_m, in_n = factorization(self.in_features, cfg.decompose_factor)
        out_l, out_k = factorization(self.out_features, cfg.decompose_factor)
        r = cfg.r
        self.full_w1 = not (cfg.decompose_both and r < max(out_l, in_m) / 2)
        self.full_w2 = not (r < max(out_k, in_n) / 2)
        if self.full_w1:
            self.lokr_w1 = self.new_parameter(out_l, in_m)
        else:
            self.lokr_w1_a, self.lokr_w1_b = self.new_parameter(out_l, r), self.new_parameter(r, in_m)
        if self.full_w2:
            self.lokr_w2 = self.new_parameter(out_k, in_n)
        else:
            self.lokr_w2_a, self.lokr_w2_b = self.new_parameter(out_k, r), self.new_parameter(r, in_n)
        if cfg.init == "lycoris":
            _init_lycoris(self)
        else:
            _init_default(self)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        w1 = self.lokr_w1 if self.full_w1 else self.lokr_w1_a @ self.lokr_w1_b  # (out_l, in_m)
        w2 = self.lokr_w2 if self.full_w2 else self.lokr_w2_a @ self.lokr_w2_b  # (out_k, in_n)
        return w1, w2

    def delta_weight(self) -> torch.Tensor:
        w1, w2 = self.factors()
        return torch.kron(w1, w2) * self.scaling  # (out, in)


def _kaiming(*params: torch.Tensor) -> None:
    for p in params:
        nn.init.kaiming_uniform_(p, a=math.sqrt(5))


@torch.no_grad()
def _init_default(layer: LokrLinear) -> None:
    """peft's init_weights=True: W1 (or W1a) = 0, the rest Kaiming-uniform, in peft's order."""
    if layer.full_w1:
        nn.init.zeros_(layer.lokr_w1)
    else:
        nn.init.zeros_(layer.lokr_w1_a)
        _kaiming(layer.lokr_w1_b)
    if layer.full_w2:
        _kaiming(layer.lokr_w2)
    else:
        _kaiming(layer.lokr_w2_a, layer.lokr_w2_b)


@torch.no_grad()
def _init_lycoris(layer: LokrLinear) -> None:
    """peft's init_weights='lycoris': W1 Kaiming-uniform, W2 (or W2b) = 0."""
    if layer.full_w1:
        _kaiming(layer.lokr_w1)
    else:
        _kaiming(layer.lokr_w1_a, layer.lokr_w1_b)
    if layer.full_w2:
        nn.init.zeros_(layer.lokr_w2)
    else:
        nn.init.zeros_(layer.lokr_w2_b)
        _kaiming(layer.lokr_w2_a)


class LokrMethod(LycorisMethod[LokrConfig]):
    name = "lokr"
    config_cls = LokrConfig
    peft_type = "LOKR"
    layer_cls = LokrLinear

    @classmethod
    def notes(cls, model: nn.Module) -> list[str]:
        layers = [m for m in model.modules() if isinstance(m, LokrLinear)]
        with torch.no_grad():
            shapes = sorted({f"{tuple(w1.shape)} x {tuple(w2.shape)}"
                             for w1, w2 in (m.factors() for m in layers)})
        return [f"Kronecker factors W1 x W2: {', '.join(shapes)}"]

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: LokrConfig, head: list[str]) -> dict[str, Any]:
        return {**super().adapter_config(model, cfg, head),
                "init_weights": "lycoris" if cfg.init == "lycoris" else True,
                "decompose_both": cfg.decompose_both, "decompose_factor": cfg.decompose_factor,
                "rank_dropout_scale": cfg.rank_dropout_scale}

    @classmethod
    def own_options(cls, config: dict[str, Any]) -> dict[str, Any]:
        return {"decompose_both": bool(config.get("decompose_both", False)),
                "decompose_factor": config.get("decompose_factor", -1),
                "rank_dropout_scale": bool(config.get("rank_dropout_scale", False)),
                "init": "lycoris" if config.get("init_weights") == "lycoris" else "default"}
