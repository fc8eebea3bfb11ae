"""AdaLoRA (Zhang et al., 2023): LoRA in SVD form, P diag(E) Q, whose ranks are pruned by
importance during training, so the rank budget goes where it helps most.

    y = x W^T + bias + (alpha / init_r) * ((x (A * E)^T) B^T)      A (r, in), E (r, 1), B (out, r)

E starts at 0, so the model starts as the base. The training loop runs the RankAllocator
(rank_allocator.py, a StepHook): every step it scores each triplet (row of A, value of E,
column of B) by smoothed |p * grad| and zeroes the E values of the least important ones
until the total rank meets a cubic budget from init_r to target_r per layer. An
orthogonality penalty keeps A's rows and B's columns near-orthonormal. Names, scaling and
the saved format are peft's: `lora_A`, `lora_E`, `lora_B` tensors cut to the kept ranks and
`rank_pattern` (which of the init_r triplets each layer kept) in adapter_config.json.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunelab.errors import MethodError
from tunelab.methods import targets as tgt
from tunelab.methods.adalora_layer import (
    AdaLoraConfig,
    AdaLoraLinear,
    adalora_layers,
    check_schedule,
    final_ranks,
    rank_pattern,
)
from tunelab.methods.base import PEFT_PREFIX, AdapterMethod, ApplyReport, refuse_unsupported, required
from tunelab.methods.rank_allocator import RankAllocator


class AdaLoraMethod(AdapterMethod[AdaLoraConfig]):
    name = "adalora"
    config_cls = AdaLoraConfig
    peft_type = "ADALORA"

    @classmethod
    def apply(cls, model: nn.Module, cfg: AdaLoraConfig, head: list[str]) -> ApplyReport:
        pattern = dict(cfg.rank_pattern or {})

        def make_layer(name: str, base: nn.Module) -> AdaLoraLinear:
            slots = pattern.pop(f"{name}.lora_E", [True] * cfg.init_r)
            if len(slots) != cfg.init_r:
                raise MethodError(f"method.rank_pattern: '{name}.lora_E' has {len(slots)} entries; "
                                  f"init_r is {cfg.init_r}")
            layer = AdaLoraLinear(base, torch.tensor(slots, dtype=torch.bool), cfg.alpha, cfg.dropout)
            layer.total_step = cfg.total_step
            return layer

        out = tgt.inject(cls.name, model, cfg.targets, head, lambda _: make_layer)
        if pattern:
            raise MethodError(f"method.rank_pattern: {', '.join(sorted(pattern)[:3])} names no "
                              f"adapted layer (targets: {cfg.targets}); wrong base model?")
        n = len(out.matched)
        out.notes.append(f"init_r={cfg.init_r} -> target_r={cfg.target_r} (total rank "
                         f"{cfg.init_r * n} -> {cfg.target_r * n} over {n} layers), scaling "
                         f"alpha/init_r = {cfg.alpha:g}/{cfg.init_r}, orth_reg_weight "
                         f"{cfg.orth_reg_weight:g}, schedule tinit={cfg.tinit} tfinal={cfg.tfinal} "
                         f"deltaT={cfg.deltaT}")
        out.hook = RankAllocator(adalora_layers(model), cfg)
        return out

    # ------------------------------------------------------------------ PEFT adapter format
    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: AdaLoraConfig, head: list[str]) -> dict[str, Any]:
        layers = adalora_layers(model)
        steps = next(iter(layers.values())).total_step or cfg.total_step \
            or cfg.tinit + cfg.tfinal + 1  # never trained: the least peft accepts
        return {"init_r": cfg.init_r, "target_r": cfg.target_r, "lora_alpha": cfg.alpha,
                "lora_dropout": cfg.dropout,
                "target_modules": tgt.peft_targets(model, list(layers), head),
                "tinit": cfg.tinit, "tfinal": cfg.tfinal, "deltaT": cfg.deltaT,
                "beta1": cfg.beta1, "beta2": cfg.beta2, "orth_reg_weight": cfg.orth_reg_weight,
                "total_step": steps, "rank_pattern": rank_pattern(model),
                "fan_in_fan_out": any(m.fan_in_fan_out for m in layers.values()),
                "init_lora_weights": True, "bias": "none", "use_rslora": False, "use_dora": False,
                "alpha_pattern": {}, "layers_to_transform": None, "layers_pattern": None}

    @classmethod
    def adapter_tensors(cls, model: nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
        """The kept triplets only, as peft saves them (the pruned ones are exactly zero in E)."""
        out: dict[str, torch.Tensor] = {}
        for name, layer in adalora_layers(model).items():
            rows = layer.kept_rows()
            out[f"{PEFT_PREFIX}{name}.lora_A"] = layer.lora_A[rows]
            out[f"{PEFT_PREFIX}{name}.lora_E"] = layer.lora_E[rows]
            out[f"{PEFT_PREFIX}{name}.lora_B"] = layer.lora_B[:, rows]
        return out

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> AdaLoraConfig:
        refuse_unsupported(config, {"bias": "none", "layers_to_transform": None, "alpha_pattern": {},
                                    "exclude_modules": None, "lora_bias": False, "use_dora": False,
                                    "use_rslora": False}, source)
        keys = ("target_r", "tinit", "tfinal", "deltaT", "beta1", "beta2", "orth_reg_weight")
        pattern = {k.removesuffix(".default"): v for k, v in (config.get("rank_pattern") or {}).items()}
        return AdaLoraConfig(init_r=required(config, "init_r", source),
                             alpha=config.get("lora_alpha", 8.0),
                             dropout=config.get("lora_dropout", 0.0),
                             targets=required(config, "target_modules", source),
                             total_step=config.get("total_step"), rank_pattern=pattern or None,
                             **{k: config[k] for k in keys if config.get(k) is not None})


# the layer side lives in adalora_layer.py; these names are part of this module's API
__all__ = ["AdaLoraConfig", "AdaLoraLinear", "AdaLoraMethod", "adalora_layers", "check_schedule",
           "final_ranks", "rank_pattern"]
