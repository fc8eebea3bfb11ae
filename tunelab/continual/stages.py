"""The stages of a continual run, set up at once (data errors before any training) and joined
into one model: a shared encoder with a head per stage (or per named head), as in multitask
runs; adapter-per-stage keeps one frozen base and an adapter per stage instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tunelab import methods
from tunelab.continual.config import ContinualRun, stage_config
from tunelab.errors import ConfigError
from tunelab.methods.peft_format import init_from_adapter
from tunelab.recipes.base import Setup
from tunelab.recipes.setup import SETUPS
from tunelab.tasks.base import Task
from tunelab.tasks.multitask import MultiTaskModel

STAGES_DIR = "stages"


class StageTask(Task):
    """One stage's task on the joined model: batches and scores are the stage's own task's,
    run through the stage's head (`model.models[head]`)."""

    def __init__(self, inner: Any, head: str):
        self.inner, self.head = inner, head
        self.name, self.default_metric = inner.name, inner.default_metric

    def collate(self, data: Any, index: list[int]) -> dict[str, torch.Tensor]:
        return self.inner.collate(data, index)

    def units(self, data: Any, index: list[int]) -> float:
        return self.inner.units(data, index)

    def plan_batches(self, lengths: list[int], batch_size: int, seed: int, epoch: int,
                     bucket: bool) -> list[list[int]]:
        return self.inner.plan_batches(lengths, batch_size, seed, epoch, bucket)

    def set_step(self, step: int) -> None:
        self.inner.set_step(step)

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.inner.loss_sum(model.models[self.head], batch)

    def evaluate(self, model: nn.Module, data: Any, batch_size: int, device: torch.device,
                 autocast: torch.autocast | None = None) -> dict[str, Any]:
        return self.inner.evaluate(model.models[self.head], data, batch_size, device, autocast)


@dataclass
class Stages:
    cfg: ContinualRun
    setups: list[Setup]  # per stage: its data, task and (unjoined) model
    model: MultiTaskModel  # models[head]: a plain transformers task model
    report: Any  # methods.apply's report
    trainable: list[str]  # what the method trains, as named in `model`

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.cfg.stages]

    def head(self, i: int) -> str:
        return self.cfg.stages[i].head_name

    def task(self, i: int) -> StageTask:
        return StageTask(self.setups[i].task, self.head(i))

    def stage_dir(self, i: int) -> Path:
        return Path(self.cfg.output_dir) / STAGES_DIR / self.names[i]

    def score(self, i: int, device: torch.device, autocast: Any = None) -> dict[str, Any]:
        """Stage i's dev scores with the model as it is now."""
        return self.task(i).evaluate(self.model, self.setups[i].dev,
                                     self.cfg.train.eval_batch_size, device, autocast)


def build_stages(cfg: ContinualRun, log: Callable[[str], None], per_stage_adapter: bool
                 ) -> Stages:
    """Every stage's data and model (in stage order), joined; then the method."""
    setups: list[Setup] = []
    models: dict[str, nn.Module] = {}
    labels: dict[str, tuple[int, list[str]]] = {}
    for i, stage in enumerate(cfg.stages):
        sub = stage_config(cfg, i, Path(cfg.output_dir) / STAGES_DIR / stage.name)
        log(f"stage {i} {stage.name} ({sub.task}, head {stage.head_name}):")
        s = SETUPS[sub.task](sub, lambda line: log(f"  {line}"))
        if hasattr(s.task, "packing"):
            s.task.packing = False  # the config refuses packing; batches are padded
        first, seen = labels.setdefault(stage.head_name, (i, s.info["labels"]))
        if seen != s.info["labels"]:
            raise ConfigError(f"stages.{i}.head: stage {stage.name} shares head "
                              f"{stage.head_name!r} with stage {cfg.stages[first].name}, but its "
                              f"labels {s.info['labels']} differ from {seen}; give it its own "
                              "head (remove head)")
        models.setdefault(stage.head_name, s.model)
        setups.append(s)
    model = MultiTaskModel(models, "per_task" if per_stage_adapter else "shared")
    report = methods.apply(model, cfg.method, cfg.train.head_lr_scale)
    for line in report.lines():
        log(line)
    if cfg.model.init_adapter:  # the trained stages' weights: into the first stage's model
        init_from_adapter(model.models[cfg.stages[0].head_name], cfg.model.init_adapter,
                          cfg.method.name)
        log(f"adapter and head weights of stage {cfg.stages[0].name} start from "
            f"{cfg.model.init_adapter}")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return Stages(cfg, setups, model, report, trainable)


def only_train(model: nn.Module, trainable: list[str], prefix: str) -> None:
    """Train the method's parameters under `prefix` (one stage's adapter and head); freeze
    the rest."""
    allowed = set(trainable)
    for name, p in model.named_parameters():
        p.requires_grad_(name in allowed and name.startswith(prefix))
