"""What a strategy may change about a stage: the task the loop trains (replay, LwF), a
penalty on the weights (EWC, O-LoRA), which parameters train (adapter-per-stage), and work
after the stage (EWC's Fisher). The defaults are naive sequential fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from tunelab.continual.stages import Stages, StageTask
from tunelab.methods.hooks import StepHook


@dataclass
class StagePlan:
    """What the loop trains in one stage: the task, its training data, the penalty hook."""
    task: Any
    train: Any
    hook: StepHook | None = None


class Strategy:
    per_stage_adapter = False  # True: a frozen base with one adapter per stage (MultiTaskModel per_task)

    def __init__(self, cfg: Any, seed: int):
        self.cfg, self.seed = cfg, seed

    def plan(self, i: int, stages: Stages, log: Callable[[str], None]) -> StagePlan:
        """Stage i's training: its own task and data."""
        return StagePlan(stages.task(i), stages.setups[i].train)

    def after_stage(self, i: int, stages: Stages, device: torch.device,
                    log: Callable[[str], None]) -> None:
        """Once stage i has trained (counted in the training time)."""

    def earlier(self, i: int, stages: Stages) -> list[StageTask]:
        """The tasks of the stages before i."""
        return [stages.task(j) for j in range(i)]
