"""Optimizers and learning-rate schedules (warmup, then constant / linear / cosine decay)."""

from __future__ import annotations

import math

import torch
from torch import nn

from tunelab.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, lr: float,
                 lr_scales: dict[str, float] | None = None) -> list[dict]:
    """Decay matrices only: biases, norms and the DoRA magnitude are not regularised toward 0.

    A parameter named in `lr_scales` trains at lr * its scale, in a group of its own (LoRA+
    gives the B matrices a higher rate). The first two groups are always the plain ones, in
    the same order, so checkpoints written without scales still resume.
    """
    scales = lr_scales or {}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        groups.setdefault((p.ndim >= 2, scales.get(name, 1.0)), []).append(p)
    unknown = sorted(set(scales) - {n for n, p in model.named_parameters() if p.requires_grad})
    if unknown:
        raise ValueError(f"lr_scales names parameters that do not train: {', '.join(unknown[:3])}")
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr": lr * scale}
            for (decay, scale), params in groups.items()]


def build_optimizer(model: nn.Module, cfg: TrainConfig, fused: bool = False,
                    lr_scales: dict[str, float] | None = None) -> torch.optim.Optimizer:
    """`fused`: one kernel for the whole AdamW update (CUDA and CPU alike; on CPU the
    per-parameter loop costs about 4x as much); off for FSDP's sharded parameters."""
    groups = param_groups(model, cfg.weight_decay, cfg.lr, lr_scales)
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
