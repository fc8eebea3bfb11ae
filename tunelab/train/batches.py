"""Which examples each optimizer step trains on: a pure function of the step, so a resumed
run sees exactly the batches an uninterrupted one would."""

from __future__ import annotations

from typing import Any

from tunelab.config import TrainConfig
from tunelab.data.batching import Encoded
from tunelab.tasks.base import Task


class StepBatches:
    """Epoch data and batch plans of `task` over `train`, the last ones kept."""

    def __init__(self, task: Task, train: Any, cfg: TrainConfig):
        self.task, self.train, self.cfg = task, train, cfg
        self._epochs: dict[int, tuple[Encoded, list[int]]] = {}
        self._plans: dict[int, list[list[int]]] = {}
        self.per_epoch = len(self.plan(0))

    def epoch_data(self, epoch: int) -> tuple[Encoded, list[int]]:
        """(training data, lengths) of `epoch`: the same every epoch, unless the data are
        drawn anew per epoch (augmentation on the fly: `for_epoch`, a function of the epoch)."""
        if epoch not in self._epochs:
            for_epoch = getattr(self.train, "for_epoch", None)
            data = for_epoch(epoch) if for_epoch else self.train
            self._epochs = {k: v for k, v in self._epochs.items() if k == epoch - 1}
            self._epochs[epoch] = (data, data.lengths())
        return self._epochs[epoch]

    def plan(self, epoch: int) -> list[list[int]]:
        """Epoch `epoch`'s batches (the task plans them: a multitask run by task)."""
        return self.task.plan_batches(self.epoch_data(epoch)[1], self.cfg.batch_size,
                                      self.cfg.seed, epoch, self.cfg.bucket_by_length)

    def micro_batches(self, step: int) -> list[list[int]]:
        """The index lists optimizer step `step` consumes."""
        out = []
        for g in range(step * self.cfg.grad_accum, (step + 1) * self.cfg.grad_accum):
            epoch, i = divmod(g, self.per_epoch)
            if epoch not in self._plans:
                self._plans = {epoch: self.plan(epoch)}
            out.append(self._plans[epoch][i])
        return out
