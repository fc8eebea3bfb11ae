"""A new adapter and head per stage over one frozen base (MultiTaskModel per_task): stage i
trains only its own; earlier stages' adapters and heads are frozen, and each stage is scored
through its own, so later stages cannot change an earlier stage's scores (BWT is exactly 0;
the stage must be known at test time).

`orthogonal` > 0 adds O-LoRA's penalty (Wang et al. 2023) to the new stage's loss:
orthogonal * sum over LoRA layers and earlier stages of ||A_new A_old^T||_F^2, which pushes the
new adapter's input subspace away from the earlier ones' (so the adapters may later be summed
into one model with less interference)."""

from __future__ import annotations

from typing import Callable

import torch

from tunelab.continual.stages import Stages, only_train
from tunelab.continual.strategies.base import StagePlan, Strategy
from tunelab.methods.hooks import StepHook


class OrthogonalPenalty(StepHook):
    def __init__(self, pairs: list[tuple[torch.nn.Parameter, torch.Tensor]], strength: float):
        self.pairs, self.strength = pairs, strength  # (new A (r, in), frozen old A (r', in))
        self.last = 0.0

    def extra_loss(self) -> torch.Tensor | None:
        if not self.pairs:
            return None
        out = self.strength * sum((a @ old.T).pow(2).sum() for a, old in self.pairs)
        self.last = float(out.detach())
        return out

    def after_step(self, step: int) -> dict[str, float]:
        return {"olora_penalty": self.last}


def lora_pairs(stages: Stages, i: int) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
    """(stage i's lora_A, an earlier stage's lora_A) at every layer both adapt."""
    params = dict(stages.model.named_parameters())
    mine = f"models.{stages.head(i)}."
    pairs = []
    for name, p in params.items():
        if name.startswith(mine) and name.endswith("lora_A.weight"):
            rest = name[len(mine):]
            for j in range(i):
                old = params.get(f"models.{stages.head(j)}.{rest}")
                if old is not None:
                    pairs.append((p, old.detach()))
    return pairs


class AdapterPerStage(Strategy):
    per_stage_adapter = True

    def plan(self, i: int, stages: Stages, log: Callable[[str], None]) -> StagePlan:
        plan = super().plan(i, stages, log)
        only_train(stages.model, stages.trainable, f"models.{stages.head(i)}.")
        n = sum(p.numel() for p in stages.model.parameters() if p.requires_grad)
        log(f"adapter-per-stage: stage {stages.names[i]} trains its own adapter and head "
            f"({n:,} parameters); earlier stages' are frozen")
        if self.cfg.orthogonal > 0 and i > 0:
            pairs = lora_pairs(stages, i)
            log(f"o-lora: orthogonality penalty {self.cfg.orthogonal:g} over {len(pairs)} "
                "(new, earlier) LoRA A pairs")
            plan.hook = OrthogonalPenalty(pairs, self.cfg.orthogonal)
        return plan
