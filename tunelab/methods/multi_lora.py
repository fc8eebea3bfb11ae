"""Several named LoRA adapters on one layer: the stash that multi_adapter.py switches.

Kept out of LoraLinear so the training layer stays single-adapter. The adapter in use sits
in lora_A / lora_B (a single adapter keeps its PEFT names and LoraLinear's plain forward);
the others wait in `lora_stash` and are swapped in by `use_adapter`.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from tunelab.errors import AdapterError
from tunelab.methods.lora import LoraLinear, lora_scaling


class LoraSlot(nn.Module):
    """One named adapter's A, B and dropout at a layer, kept aside while another is in use."""

    def __init__(self, lora_A: nn.Linear, lora_B: nn.Linear, lora_dropout: nn.Module, r: int,
                 alpha: float, scaling_rule: str):
        super().__init__()
        self.lora_A, self.lora_B, self.lora_dropout = lora_A, lora_B, lora_dropout
        self.r, self.alpha, self.scaling_rule = r, alpha, scaling_rule


class MultiLoraLinear(LoraLinear):
    """A LoraLinear that also holds stashed adapters. Made from a LoraLinear in place (see
    `stash`), so its parameters, and anything holding the layer, stay the same objects."""

    lora_stash: nn.ModuleDict

    def adapter_names(self) -> list[str]:
        return [self.adapter_name, *self.lora_stash.keys()]

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        if name not in self.lora_stash:
            return super().factors(name)
        slot = cast(LoraSlot, self.lora_stash[name])
        return slot.lora_A.weight, slot.lora_B.weight, lora_scaling(slot.alpha, slot.r, slot.scaling_rule)

    def use_adapter(self, name: str | None) -> None:
        if name is not None and name in self.lora_stash:
            held = LoraSlot(self.lora_A, self.lora_B, self.lora_dropout, self.r, self.alpha,
                            self.scaling_rule)
            slot = cast(LoraSlot, self.lora_stash.pop(name))
            self.lora_stash[self.adapter_name] = held
            self.lora_A, self.lora_B, self.lora_dropout = slot.lora_A, slot.lora_B, slot.lora_dropout
            self.r, self.alpha, self.scaling_rule = slot.r, slot.alpha, slot.scaling_rule
            self.scaling = lora_scaling(slot.alpha, slot.r, slot.scaling_rule)
            self.adapter_name = name
        super().use_adapter(name)


def stash(layer: LoraLinear, name: str, slot: LoraSlot) -> MultiLoraLinear:
    """Keep adapter `name` at `layer` beside the one it holds."""
    if not isinstance(layer, MultiLoraLinear):
        if type(layer) is not LoraLinear:  # DoRA's forward would be lost
            raise AdapterError(f"a {type(layer).__name__} cannot hold other adapters; only LoRA "
                               "adapters can share a layer")
        layer.__class__ = MultiLoraLinear
        layer.lora_stash = nn.ModuleDict()
    assert isinstance(layer, MultiLoraLinear)
    layer.lora_stash[name] = slot
    return layer


def frozen_slot(a: torch.Tensor, b: torch.Tensor, like: torch.Tensor, r: int, alpha: float,
                rule: str, dropout: float) -> LoraSlot:
    """A LoraSlot holding frozen copies of A (r, in) and B (out, r) on `like`'s device and dtype."""
    lin_a = nn.Linear(a.shape[1], r, bias=False, device="meta")
    lin_b = nn.Linear(r, b.shape[0], bias=False, device="meta")
    lin_a.weight = nn.Parameter(a.to(like.device, like.dtype), requires_grad=False)
    lin_b.weight = nn.Parameter(b.to(like.device, like.dtype), requires_grad=False)
    drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
    return LoraSlot(lin_a, lin_b, drop, r, alpha, rule)
