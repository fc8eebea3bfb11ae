"""Optimizers and learning-rate schedules (warmup, then constant / linear / cosine decay)."""

from __future__ import annotations

import math

import torch
from torch import nn

from tunelab.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices only: biases, norms and the DoRA magnitude are not regularised toward 0."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)


def warmup_steps(cfg: TrainConfig, total: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier on the peak lr for optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, total: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    warm = warmup_steps(cfg, total)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, total, warm, cfg.schedule))
