"""Multitask fine-tuning as a task of the one training loop.

The model is a set of transformers task models sharing one base encoder (MultiTaskModel);
the data are the tasks' encoded splits side by side (MultiData, one global index space).
Each batch holds examples of one task (TaskSchedule decides which), is collated and scored by
that task's own task object, and runs through that task's model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tunelab.data.task_sampling import TaskSchedule
from tunelab.models.heads import head_modules
from tunelab.tasks.base import Task


class MultiTaskModel(nn.Module):
    """Task models (AutoModelFor... objects) built on one base model.

    `adapter="shared"`: every child of the first model's base (BERT: embeddings, encoder, and
    the pooler when present) is put into the other models' bases in place of theirs, so one
    encoder (and a method's layers in it) serves every task. `"per_task"`: each model keeps
    its own modules, but their base weights are the first model's Parameter objects, so a
    method adds one adapter per task over one set of frozen weights. Either way each task
    keeps its own head, and `models[task]` stays a plain transformers model that saves and
    loads as one.
    """

    def __init__(self, models: dict[str, nn.Module], adapter: str = "shared"):
        super().__init__()
        self.models = nn.ModuleDict(models)
        first = next(iter(models.values())).base_model
        self.shared: list[str] = []
        for model in list(models.values())[1:]:
            base = model.base_model
            for name, child in list(base.named_children()):
                mine = getattr(first, name, None)
                if not (isinstance(mine, nn.Module) and type(mine) is type(child)):
                    continue
                if adapter == "shared":
                    setattr(base, name, mine)
                else:
                    _tie_parameters(mine, child)
                self.shared.append(name)
        self.shared = list(dict.fromkeys(self.shared))
        # the heads methods leave whole and always train
        self.head_names = [f"models.{k}.{h}" for k, m in models.items() for h in head_modules(m)]

    @property
    def config(self) -> Any:
        """The base model's config (methods read the model type from it)."""
        return next(iter(self.models.values())).config

    def forward(self, task: str, **inputs: torch.Tensor) -> Any:
        return self.models[task](**inputs)


def _tie_parameters(source: nn.Module, target: nn.Module) -> None:
    """Make every parameter of `target` the same Parameter object as `source`'s."""
    for name, param in list(target.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        mine = source.get_parameter(name)
        if mine.shape != param.shape:
            raise ValueError(f"{name}: shapes differ")  # the same base config: a bug
        setattr(target.get_submodule(owner) if owner else target, leaf, mine)


@dataclass
class MultiData:
    """Every task's encoded split, indexed as one list (task after task, in config order)."""

    parts: dict[str, Any]
    offsets: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.offsets, start = {}, 0
        for name, part in self.parts.items():
            self.offsets[name] = start
            start += len(part)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts.values())

    def lengths(self) -> list[int]:
        return [n for part in self.parts.values() for n in part.lengths()]

    def locate(self, index: list[int]) -> tuple[str, list[int]]:
        """(task, indices within its split) of a batch; a batch never spans two tasks."""
        first = index[0]
        name = next(k for k in reversed(self.offsets) if self.offsets[k] <= first)
        local = [i - self.offsets[name] for i in index]
        if not all(0 <= i < len(self.parts[name]) for i in local):
            raise ValueError(f"batch spans tasks: {index[:3]}...")  # a bug, not user input
        return name, local


class MultiTask(Task):
    """The loop's task interface over several tasks; selects by the mean task metric."""

    name = "multitask"
    default_metric = "mean"

    def __init__(self, tasks: dict[str, Any], sampling: str, temperature: float):
        self.tasks, self.names = tasks, list(tasks)
        self.sampling, self.temperature = sampling, temperature
        self.train_sizes: dict[str, int] = {}
        self._schedule: tuple[tuple[int, int, bool], TaskSchedule] | None = None

    def plan_batches(self, lengths: list[int], batch_size: int, seed: int, epoch: int,
                     bucket: bool) -> list[list[int]]:
        """This epoch's batches as global indices, each from one task (see task_sampling)."""
        key = (batch_size, seed, bucket)
        if self._schedule is None or self._schedule[0] != key:
            per_task, start = {}, 0
            for name in self.names:
                per_task[name] = lengths[start:start + self.train_sizes[name]]
                start += self.train_sizes[name]
            self._schedule = key, TaskSchedule(per_task, batch_size, seed, bucket, self.sampling,
                                               self.temperature)
        start, base = 0, {}  # where each task's training examples start
        for name in self.names:
            base[name], start = start, start + self.train_sizes[name]
        return [[base[task] + i for i in index] for task, index in self._schedule[1].plan(epoch)]

    def collate(self, data: MultiData, index: list[int]) -> dict[str, torch.Tensor]:
        name, local = data.locate(index)
        task, part = self.tasks[name], data.parts[name]
        batch = task.collate(part, local)
        batch["task_id"] = torch.tensor(self.names.index(name))
        # the task's own loss normalisation (NER: per labelled sub-token), per example here
        batch["loss_scale"] = torch.tensor(len(local) / task.units(part, local))
        return batch

    @staticmethod
    def units(data: MultiData, index: list[int]) -> int:
        """Examples: each batch's loss is its task's own mean loss, weighted by examples."""
        return len(index)

    def loss_sum(self, model: MultiTaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        name = self.names[int(batch["task_id"])]
        inputs = {k: v for k, v in batch.items() if k not in ("task_id", "loss_scale")}
        return self.tasks[name].loss_sum(model.models[name], inputs) * batch["loss_scale"]

    def evaluate(self, model: MultiTaskModel, data: MultiData, batch_size: int,
                 device: torch.device, autocast: torch.autocast | None = None) -> dict[str, Any]:
        """Every task's scores as `task/metric`, their mean metric and mean loss."""
        out: dict[str, Any] = {}
        metrics, losses = [], []
        for name, task in self.tasks.items():
            scores = task.evaluate(model.models[name], data.parts[name], batch_size, device,
                                   autocast)
            out.update({f"{name}/{k}": v for k, v in scores.items()})
            metrics.append(scores[task.default_metric])
            losses.append(scores["loss"])
        return {"mean": sum(metrics) / len(metrics), "loss": sum(losses) / len(losses), **out}
