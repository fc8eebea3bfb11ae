"""Experience replay: a seeded buffer of k training examples per earlier stage; every
micro-batch of a later stage trains together with examples drawn from the buffer, each
through its own stage's head.

The replayed examples add their loss as if they were more examples of the batch (the sum of
their per-example losses), without shrinking the new stage's gradient: a step's loss is
(sum over new examples + sum over replayed ones) / new examples."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any, Callable

import torch
from torch import nn

from tunelab.continual.stages import Stages, StageTask
from tunelab.continual.strategies.base import StagePlan, Strategy

UNITS = "continual_units"  # a collated batch's loss units, for the replay share; not a model input


def buffer_ids(n: int, k: int, seed: int, stage: int) -> list[int]:
    """The k (or all n) training examples of a stage kept for replay: seeded, sorted."""
    return sorted(random.Random(seed * 1_000_003 + stage).sample(range(n), min(k, n)))


class CountedStageTask(StageTask):
    """A stage task whose batches carry their loss units, for strategies that add loss terms
    scaled to the batch (replay, LwF)."""

    def collate(self, data: Any, index: list[int]) -> dict[str, torch.Tensor]:
        batch = super().collate(data, index)
        batch[UNITS] = torch.tensor(float(self.inner.units(data, index)))
        return batch

    @staticmethod
    def take_units(batch: dict[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
        """(the batch without its units, the units, the number of rows)."""
        batch = dict(batch)
        units = batch.pop(UNITS)
        return batch, units, len(batch["input_ids"])


class ReplayTask(CountedStageTask):
    def __init__(self, inner: Any, head: str, buffer: list[tuple[StageTask, Any, int]],
                 per_batch: int, seed: int):
        super().__init__(inner, head)
        self.buffer = buffer  # (stage task, its training data, example index) per kept example
        self.per_batch, self.seed = per_batch, seed
        self.rng = random.Random(seed)

    def set_step(self, step: int) -> None:
        """Replayed examples are drawn from (seed, step): a resumed stage draws the same."""
        super().set_step(step)
        self.rng = random.Random(self.seed * 7_919 + step)

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch, units, n = self.take_units(batch)
        loss = super().loss_sum(model, batch)
        drawn = self.rng.sample(range(len(self.buffer)), min(self.per_batch, len(self.buffer)))
        groups: dict[int, list[int]] = defaultdict(list)
        tasks: dict[int, tuple[StageTask, Any]] = {}
        for b in drawn:
            task, data, i = self.buffer[b]
            groups[id(data)].append(i)
            tasks[id(data)] = task, data
        replay = loss.new_zeros(())
        for key, ids in groups.items():  # one forward per earlier stage, through its head
            task, data = tasks[key]
            rb = {k: v.to(loss.device) for k, v in task.collate(data, sorted(ids)).items()}
            mean = task.loss_sum(model, rb) / max(task.units(data, sorted(ids)), 1e-9)
            replay = replay + mean * len(ids)  # the sum of per-example mean losses
        return loss + replay * (units / n)  # per example, in the new stage's loss units


class Replay(Strategy):
    def plan(self, i: int, stages: Stages, log: Callable[[str], None]) -> StagePlan:
        if i == 0:
            return super().plan(i, stages, log)
        buffer = []
        for j, task in enumerate(self.earlier(i, stages)):
            data = stages.setups[j].train
            buffer += [(task, data, k) for k in buffer_ids(len(data), self.cfg.per_stage,
                                                           self.seed, j)]
        per_batch = self.cfg.batch or max(1, stages.cfg.train.batch_size // 4)
        log(f"replay: {len(buffer)} buffered examples of {i} earlier stage(s), {per_batch} "
            "replayed with every micro-batch")
        task = ReplayTask(stages.setups[i].task, stages.head(i), buffer, per_batch, self.seed)
        return StagePlan(task, stages.setups[i].train)
