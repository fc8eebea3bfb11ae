"""Elastic weight consolidation (Kirkpatrick et al. 2017) on the trainable parameters.

After stage s: F_s, the diagonal empirical Fisher (mean over examples of the squared gradient
of each example's own mean loss) and the weights w_s. Later stages add
strength/2 * sum_s sum F_s (w - w_s)^2 to the step's mean loss. The stages are kept as one
quadratic with the same gradient, sum_s F_s (w - w_s)^2 = F (w - m)^2 + const with
F = sum_s F_s and m = sum_s F_s w_s / F, so a step costs one pass however many stages came
before (the logged penalty leaves out the constant). With `normalize`, each F_s is first divided by
its mean over all trainable weights (a confidently fit stage has a near-zero raw Fisher)."""

from __future__ import annotations

import random
from typing import Callable

import torch
from torch import nn

from tunelab.continual.stages import Stages
from tunelab.continual.strategies.base import StagePlan, Strategy
from tunelab.methods.hooks import StepHook


class EwcPenalty(StepHook):
    def __init__(self, params: dict[str, nn.Parameter], fisher: dict[str, torch.Tensor],
                 mean: dict[str, torch.Tensor], strength: float):
        self.params, self.fisher, self.mean, self.strength = params, fisher, mean, strength
        self.last = 0.0

    def extra_loss(self) -> torch.Tensor | None:
        total = None
        for name, p in self.params.items():
            term = (self.fisher[name] * (p - self.mean[name]) ** 2).sum()
            total = term if total is None else total + term
        if total is None:
            return None
        out = 0.5 * self.strength * total
        self.last = float(out.detach())
        return out

    def after_step(self, step: int) -> dict[str, float]:
        return {"ewc_penalty": self.last}


def diagonal_fisher(stages: Stages, i: int, params: dict[str, nn.Parameter], examples: int,
                    seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Mean squared per-example gradient on `examples` seeded training examples of stage i
    (the model in eval mode: no dropout noise in the estimate)."""
    task, data = stages.task(i), stages.setups[i].train
    ids = random.Random(seed * 1_000_003 + i).sample(range(len(data)), min(examples, len(data)))
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    model = stages.model
    was = model.training
    model.eval()
    for k in ids:
        batch = {key: v.to(device) for key, v in task.collate(data, [k]).items()}
        model.zero_grad(set_to_none=True)
        loss = task.loss_sum(model, batch) / max(task.units(data, [k]), 1e-9)
        loss.backward()
        for n, p in params.items():
            if p.grad is not None:
                fisher[n] += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was)
    return {n: f / len(ids) for n, f in fisher.items()}


class Ewc(Strategy):
    def __init__(self, cfg, seed: int):
        super().__init__(cfg, seed)
        self.fisher: dict[str, torch.Tensor] = {}
        self.weighted: dict[str, torch.Tensor] = {}  # sum_s F_s w_s

    def plan(self, i: int, stages: Stages, log: Callable[[str], None]) -> StagePlan:
        plan = super().plan(i, stages, log)
        if self.fisher:
            params = dict(stages.model.named_parameters())
            mean = {n: self.weighted[n] / self.fisher[n].clamp_min(1e-30) for n in self.fisher}
            plan.hook = EwcPenalty({n: params[n] for n in self.fisher}, self.fisher, mean,
                                   self.cfg.strength)
        return plan

    def after_stage(self, i: int, stages: Stages, device: torch.device,
                    log: Callable[[str], None]) -> None:
        params = {n: p for n, p in stages.model.named_parameters() if p.requires_grad}
        fisher = diagonal_fisher(stages, i, params, self.cfg.fisher_examples, self.seed, device)
        raw = sum(float(f.sum()) for f in fisher.values())
        if self.cfg.normalize:  # mean 1 over every trainable weight of the stage
            count = sum(f.numel() for f in fisher.values())
            fisher = {n: f * (count / max(raw, 1e-30)) for n, f in fisher.items()}
        for n, f in fisher.items():
            w = params[n].detach()
            self.fisher[n] = self.fisher.get(n, torch.zeros_like(f)) + f
            self.weighted[n] = self.weighted.get(n, torch.zeros_like(f)) + f * w
        log(f"ewc: diagonal Fisher of stage {stages.names[i]} over {len(params)} trainable "
            f"tensors (sum {raw:.3g}" + (", normalised to mean 1" if self.cfg.normalize else "")
            + f"), strength {self.cfg.strength:g}")
