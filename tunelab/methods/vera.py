"""VeRA (Kopiczko et al., 2024): one frozen random pair A, B shared by every adapted layer;
each layer trains only two scaling vectors, d (r,) and b (out,).

    y = x W^T + bias + b * (d * (x A^T)) B^T      (A, B sliced to the layer's in / out size)

b starts at 0, so the model starts as the base; the update folds into W on merge. A and B
come from a seeded generator exactly as in peft (Kaiming-uniform, A first), and the adapter
file stores them too (peft's save_projection), so an adapter reloads bit for bit anywhere.
Parameter and key names (vera_lambda_b, vera_lambda_d, base_model.vera_A/B) are peft's.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from tunelab.errors import AdapterError
from tunelab.methods import targets as tgt
from tunelab.methods.base import AdapterMethod, ApplyReport, layers_of, refuse_unsupported, required
from tunelab.methods.layer import AdaptedLinear, linear_shape, tensor_options
from tunelab.schema import StrictModel

# the shared projections' keys in a PEFT VeRA adapter file (outside base_model.model)
A_KEY, B_KEY = "base_model.vera_A", "base_model.vera_B"


class VeraConfig(StrictModel):
    name: Literal["vera"] = "vera"
    r: int = Field(256, ge=1, le=65536)  # rank of the shared projections (higher than LoRA's)
    targets: list[str] | str = tgt.ALL_LINEAR
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    d_initial: float = Field(0.1, gt=0.0)  # starting value of every d (the paper suggests <= 0.1)
    projection_seed: int = Field(0, ge=0)  # seeds A and B (peft's projection_prng_key)

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str] | str) -> list[str] | str:
        return tgt.check_targets(v)


def kaiming_uniform(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """peft's VeRA init: U(-b, b) with b = sqrt(3) * sqrt(2) / sqrt(fan_in), fan_in = shape[1]."""
    bound = math.sqrt(3.0) * math.sqrt(2.0) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


class VeraProjections:
    """The frozen A (r, max_in) and B (max_out, r) every VeRA layer of a model shares.

    Not a registered buffer: the model's layers would each get their own copy when moved.
    It follows the layers to their device on first use there instead.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b

    def on(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.a.device != like.device or self.a.dtype != like.dtype:
            self.a, self.b = self.a.to(like), self.b.to(like)
        return self.a, self.b


def shared_projections(model: nn.Module, chosen: list[str], cfg: VeraConfig) -> VeraProjections:
    """A and B as large as the largest chosen layer needs, drawn as peft draws them."""
    shapes = [linear_shape(model.get_submodule(n)) for n in chosen]
    max_out, max_in = max(s[0] for s in shapes), max(s[1] for s in shapes)
    generator = torch.Generator(device="cpu").manual_seed(cfg.projection_seed)
    a = kaiming_uniform((cfg.r, max_in), generator)  # A first, as peft draws them
    b = kaiming_uniform((max_out, cfg.r), generator)
    options = tensor_options(model.get_submodule(chosen[0]))  # a quantized base: its float dtype
    return VeraProjections(a.to(**options), b.to(**options))


class VeraLinear(AdaptedLinear):
    """Replaces an nn.Linear: y = x W^T + bias + lambda_b * (lambda_d * (x A^T)) B^T."""

    def __init__(self, base: nn.Module, projections: VeraProjections, r: int, dropout: float,
                 d_initial: float):
        super().__init__(base)
        self.r = r
        self.projections = projections
        self.vera_lambda_b = self.new_parameter(self.out_features)
        self.vera_lambda_d = self.new_parameter(r)
        nn.init.zeros_(self.vera_lambda_b)
        nn.init.constant_(self.vera_lambda_d, d_initial)
        self.vera_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def sliced(self) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.projections.on(self.vera_lambda_d)
        return a[:, : self.in_features], b[: self.out_features, :]  # (r, in), (out, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        a, b = self.sliced()
        hidden = self.vera_lambda_d * F.linear(self.vera_dropout(x), a)  # (..., r)
        return self.base_forward(x) + self.vera_lambda_b * F.linear(hidden, b)

    def delta_weight(self) -> torch.Tensor:
        a, b = self.sliced()
        return (self.vera_lambda_b.unsqueeze(1) * b) @ (self.vera_lambda_d.unsqueeze(1) * a)  # (out, in)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        return self.rebuilt(self.linear_weight() + self.delta_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", r={self.r}"


class VeraMethod(AdapterMethod[VeraConfig]):
    name = "vera"
    config_cls = VeraConfig
    peft_type = "VERA"

    @classmethod
    def apply(cls, model: nn.Module, cfg: VeraConfig, head: list[str]) -> ApplyReport:

        def layers_for(chosen: list[str]) -> tgt.LayerFactory:
            projections = shared_projections(model, chosen, cfg)
            return lambda _, base: VeraLinear(base, projections, cfg.r, cfg.dropout, cfg.d_initial)

        out = tgt.inject(cls.name, model, cfg.targets, head, layers_for)
        projections = next(iter(vera_layers(model).values())).projections
        a, b = projections.a, projections.b
        out.notes.append(f"r={cfg.r}, shared A {tuple(a.shape)} and B {tuple(b.shape)} (frozen, "
                         f"seed {cfg.projection_seed}), d starts at {cfg.d_initial:g}, dropout "
                         f"{cfg.dropout:g}")
        return out

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: VeraConfig, head: list[str]) -> dict[str, Any]:
        layers = vera_layers(model)
        return {"r": cfg.r, "target_modules": tgt.peft_targets(model, list(layers), head),
                "projection_prng_key": cfg.projection_seed, "save_projection": True,
                "vera_dropout": cfg.dropout, "d_initial": cfg.d_initial,
                "fan_in_fan_out": any(m.fan_in_fan_out for m in layers.values()),
                "bias": "none", "init_weights": True, "layers_to_transform": None,
                "layers_pattern": None}

    @classmethod
    def adapter_tensors(cls, model: nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
        out = super().adapter_tensors(model, head)
        projections = next(iter(vera_layers(model).values())).projections
        return {**out, A_KEY: projections.a, B_KEY: projections.b}

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> VeraConfig:
        refuse_unsupported(config, {"bias": "none", "layers_to_transform": None}, source)
        return VeraConfig(r=required(config, "r", source),
                          targets=required(config, "target_modules", source),
                          dropout=config.get("vera_dropout", 0.0),
                          d_initial=config.get("d_initial", 0.1),
                          projection_seed=config.get("projection_prng_key", 0))

    @classmethod
    def take_extra_tensors(cls, model: nn.Module, state: dict[str, torch.Tensor],
                           source: str) -> dict[str, torch.Tensor]:
        """Use the saved A and B when the file has them (else they were re-drawn from the seed)."""
        rest = {k: v for k, v in state.items() if k not in (A_KEY, B_KEY)}
        if A_KEY not in state and B_KEY not in state:
            return rest
        if A_KEY not in state or B_KEY not in state:
            raise AdapterError(f"{source}: holds only one of {A_KEY}, {B_KEY}; is the file complete?")
        projections = next(iter(vera_layers(model).values())).projections
        for key, ours in ((A_KEY, projections.a), (B_KEY, projections.b)):
            if state[key].shape != ours.shape:
                raise AdapterError(f"{source}: {key} has shape {tuple(state[key].shape)}, the model "
                                   f"expects {tuple(ours.shape)}; wrong base model, targets or r?")
            with torch.no_grad():
                ours.copy_(state[key])
        return rest


def vera_layers(model: nn.Module) -> dict[str, VeraLinear]:
    return layers_of(model, VeraLinear)
