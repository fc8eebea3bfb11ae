"""AdaLoRA's config and layer, shared by the method (adalora.py) and its rank allocator
(rank_allocator.py), so neither imports the other's module to reach them."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import nn

from tunelab.methods import targets as tgt
from tunelab.methods.base import layers_of
from tunelab.methods.layer import AdaptedLinear
from tunelab.schema import StrictModel


class AdaLoraConfig(StrictModel):
    name: Literal["adalora"] = "adalora"
    init_r: int = Field(12, ge=1, le=4096)  # every layer's rank at the start
    target_r: int = Field(8, ge=1, le=4096)  # the mean rank per layer at the end
    alpha: float = Field(8.0, gt=0.0)  # the update is scaled by alpha / init_r (peft's lora_alpha)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    targets: list[str] | str = tgt.ALL_LINEAR
    # the budget schedule, in optimizer steps: init_r for tinit steps, a cubic decrease to
    # target_r, then the last tfinal steps at target_r with the ranks fixed
    tinit: int = Field(0, ge=0)
    tfinal: int = Field(0, ge=0)
    deltaT: int = Field(1, ge=1)  # re-allocate every deltaT steps while the budget shrinks
    beta1: float = Field(0.85, gt=0.0, lt=1.0)  # EMA of the importance (sensitivity)
    beta2: float = Field(0.85, gt=0.0, lt=1.0)  # EMA of its deviation (uncertainty)
    orth_reg_weight: float = Field(0.5, ge=0.0)  # weight of the orthogonality penalty
    total_step: int | None = Field(None, ge=1)  # schedule length; None: the run's optimizer steps
    # which of the init_r triplets each layer kept ({"<layer>.lora_E": [bool] * init_r}):
    # filled when an adapter is loaded; a training run starts without one
    rank_pattern: dict[str, list[bool]] | None = None

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, v: list[str] | str) -> list[str] | str:
        return tgt.check_targets(v)

    @model_validator(mode="after")
    def _check_budget(self) -> "AdaLoraConfig":
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must not exceed init_r ({self.init_r}): "
                             "AdaLoRA only removes ranks")
        if self.total_step is not None:
            check_schedule(self.tinit, self.tfinal, self.total_step, "method.total_step")
        return self


def check_schedule(tinit: int, tfinal: int, total: int, what: str) -> None:
    """peft's rule: some steps must remain between the warm-up and the final phase."""
    if tinit >= total - tfinal:
        raise ValueError(f"tinit ({tinit}) + tfinal ({tfinal}) leave no step of {what} ({total}) "
                         "to shrink the ranks in; lower them or train longer")


class AdaLoraLinear(AdaptedLinear):
    """Replaces an nn.Linear: y = x W^T + bias + s * (x (A * E)^T) B^T, s = alpha / init_r.

    `slots` says which of the init_r triplets the rows are (all of them while training; the
    kept ones when loaded from an adapter). `rank_mask` is the allocator's current choice.
    """

    def __init__(self, base: nn.Module, slots: torch.Tensor, alpha: float, dropout: float):
        super().__init__(base)
        self.r = int(slots.sum())
        self.ranknum = float(len(slots))  # init_r: the scale stays put as ranks go (as in peft)
        self.scaling = alpha
        self.register_buffer("slots", slots.clone(), persistent=False)
        self.register_buffer("rank_mask", None, persistent=False)
        self.total_step: int | None = None  # the schedule's length, written to the adapter
        self.lora_A = self.new_parameter(self.r, self.in_features)  # right singular vectors
        self.lora_E = self.new_parameter(self.r, 1)  # singular values
        self.lora_B = self.new_parameter(self.out_features, self.r)  # left singular vectors
        with torch.no_grad():  # peft's init: E = 0, so the model starts as the base
            nn.init.zeros_(self.lora_E)
            nn.init.normal_(self.lora_A, mean=0.0, std=0.02)
            nn.init.normal_(self.lora_B, mean=0.0, std=0.02)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in) -> (..., out)
        hidden = F.linear(self.lora_dropout(x), self.lora_A * self.lora_E)  # (..., r)
        update = F.linear(hidden, self.lora_B)  # (..., out)
        return self.base_forward(x) + update * self.scaling / (self.ranknum + 1e-5)

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B @ (self.lora_A * self.lora_E) * self.scaling / (self.ranknum + 1e-5)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        return self.rebuilt(self.linear_weight() + self.delta_weight(), self.bias)

    def kept_rows(self) -> torch.Tensor:
        """(r,) bool: the rows that shape the output, the allocator's plus any E it has not
        zeroed (restored best weights may predate the last allocation)."""
        if self.rank_mask is None:
            return torch.ones(self.r, dtype=torch.bool, device=self.lora_E.device)
        return self.rank_mask | (self.lora_E.detach().view(-1) != 0)

    def pattern(self) -> torch.Tensor:
        """(init_r,) bool: which of the init_r triplets this layer keeps."""
        out = self.slots.clone()
        out[self.slots] = self.kept_rows()
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", r={self.r}, init_r={int(self.ranknum)}"


def adalora_layers(model: nn.Module) -> dict[str, AdaLoraLinear]:
    return layers_of(model, AdaLoraLinear)


def rank_pattern(model: nn.Module) -> dict[str, list[bool]] | None:
    """peft's rank_pattern ({"<layer>.lora_E": [bool] * init_r}), or None while every layer
    still has all its ranks and no allocation has happened."""
    layers = adalora_layers(model)
    if all(m.rank_mask is None and bool(m.slots.all()) for m in layers.values()):
        return None
    return {f"{n}.lora_E": m.pattern().tolist() for n, m in layers.items()}


def final_ranks(layers: dict[str, AdaLoraLinear]) -> dict[str, int]:
    """Each layer's rank as it would be saved now."""
    return {n: int(m.pattern().sum()) for n, m in layers.items()}
