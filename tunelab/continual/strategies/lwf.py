"""Learning without forgetting (Li & Hoiem 2016): the new stage's inputs also go through the
heads of earlier stages, whose outputs are distilled from the model as it was before the
stage (a frozen copy: the teacher). Per example the loss adds alpha * T^2 * KL(teacher ||
student) for each earlier head (token heads: the mean over the example's tokens)."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
from torch import nn

from tunelab.continual.stages import Stages, StageTask
from tunelab.continual.strategies.base import StagePlan, Strategy
from tunelab.continual.strategies.replay import CountedStageTask
from tunelab.tasks.distill import kd_sum


class LwfTask(CountedStageTask):
    def __init__(self, inner: Any, head: str, old: list[StageTask], teacher: nn.Module,
                 alpha: float, temperature: float):
        super().__init__(inner, head)
        self.old, self.teacher = old, teacher  # one task per earlier head (its logits)
        self.alpha, self.temperature = alpha, temperature

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch, units, n = self.take_units(batch)
        loss = super().loss_sum(model, batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        mask = batch["attention_mask"].bool() if "attention_mask" in batch else None
        kd = loss.new_zeros(())
        for old in self.old:
            student = old.inner.logits(model.models[old.head], inputs)  # (B, C) or (B, T, C)
            with torch.no_grad():
                teacher = old.inner.logits(self.teacher.models[old.head], inputs)
            if student.dim() == 3:  # a token head: each example's mean over its tokens
                keep = mask if mask is not None else torch.ones(student.shape[:2], dtype=torch.bool,
                                                               device=student.device)
                per_token = torch.stack([kd_sum(student[b][keep[b]], teacher[b][keep[b]],
                                                self.temperature) / keep[b].sum().clamp_min(1)
                                         for b in range(student.shape[0])])
                kd = kd + per_token.sum()
            else:
                kd = kd + kd_sum(student, teacher, self.temperature)
        return loss + self.alpha * kd * (units / n)


class Lwf(Strategy):
    def plan(self, i: int, stages: Stages, log: Callable[[str], None]) -> StagePlan:
        heads = list(dict.fromkeys(stages.head(j) for j in range(i)))  # earlier heads, once
        if not heads:
            return super().plan(i, stages, log)
        first = {h: next(j for j in range(i) if stages.head(j) == h) for h in heads}
        old = [stages.task(first[h]) for h in heads]
        teacher = copy.deepcopy(stages.model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        log(f"lwf: distilling heads {', '.join(heads)} from the model before stage "
            f"{stages.names[i]} (alpha {self.cfg.alpha:g}, temperature {self.cfg.temperature:g})")
        task = LwfTask(stages.setups[i].task, stages.head(i), old, teacher, self.cfg.alpha,
                       self.cfg.temperature)
        return StagePlan(task, stages.setups[i].train)
