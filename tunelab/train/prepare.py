"""Getting a model ready to train, in one place: each change is logged under the config key
that asks for it (or that it depends on)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from tunelab.config import TrainConfig
from tunelab.errors import ConfigError
from tunelab.kernels.dropout_attention import use_dropout_attention
from tunelab.kernels.fast_dropout import use_fast_dropout
from tunelab.train.distributed import Dist, wrap


def prepare(model: nn.Module, task: Any, cfg: TrainConfig, device: torch.device, dist: Dist,
            log: Callable[[str], None], hook: Any = None) -> nn.Module:
    """Change `model` in place for training and return the module whose forward is the
    task's loss: DDP (or FSDP) under torchrun, the plain loss module otherwise, compiled
    when train.compile is set. `hook`: the method's per-step code, if it has any."""
    if hook is not None and dist.active and cfg.distributed == "fsdp":
        raise ConfigError(f"train.distributed: fsdp shards the parameters, and this method's "
                          f"{type(hook).__name__} needs them whole every step; use ddp")
    if cfg.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError("train.gradient_checkpointing: this model does not support it")
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        log("train.gradient_checkpointing: activations are recomputed in the backward pass")
    # the CPU dropout mask is a tenth of a small model's step
    swapped = use_fast_dropout(model)
    if swapped:
        log(f"model.dropout: {swapped} dropout layers draw their masks with the fast kernel")
    if device.type == "cpu":  # dropout in attention also costs SDPA its fused kernel
        switched = use_dropout_attention(model)
        if switched:
            log(f"train.device: cpu, so {switched} model(s) run attention with its dropout "
                "in one kernel")
    forward = wrap(model, task, dist, cfg.distributed)
    if cfg.compile:
        forward = torch.compile(forward, dynamic=True)
        log("train.compile: the training forward is compiled (torch.compile, dynamic shapes)")
    return forward


def autocast_for(precision: str, device: torch.device) -> tuple[torch.autocast | None, str]:
    """train.precision: (the autocast context training and evaluation run in, or None; its
    name). auto is bf16 on a GPU that has it."""
    bf16 = precision == "bf16" or (
        precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return (torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else None), \
        ("bf16" if bf16 else "fp32")
