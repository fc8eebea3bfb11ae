"""What the training loop, a run and the commands ask of a task: one base class.

Every task implements the four required methods (collate, units, loss_sum, evaluate) and
names itself (`name`, `default_metric`). The hooks below them have no-op defaults; a task
overrides those it needs, so callers call them on any task and never ask what a task is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tunelab.data.batching import plan_batches

# runs fn(model) where the model's forward works (Trainer.inside: within FSDP's root forward)
Inside = Callable[[Callable[[nn.Module], Any]], Any]


class Task:
    """The task interface. Data are a task's encoded split (len(), lengths()); `index` lists
    the examples of one batch."""

    name: str = "task"
    default_metric: str = "loss"  # the metric a run selects by when train.metric is unset
    samples: int = 0  # held-out generations written at each evaluation (write_samples)

    # ------------------------------------------------------------------ required
    def collate(self, data: Any, index: list[int]) -> dict[str, torch.Tensor]:
        """The batch of examples `index`, as CPU tensors."""
        raise NotImplementedError

    def units(self, data: Any, index: list[int]) -> float:
        """What a step's loss sum is divided by (examples, or trained tokens)."""
        raise NotImplementedError

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The summed (not mean) loss of `batch`."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, data: Any, batch_size: int, device: torch.device,
                 autocast: torch.autocast | None = None) -> dict[str, Any]:
        """Held-out scores of `data`, `default_metric` and "loss" among them."""
        raise NotImplementedError

    # ------------------------------------------------------------------ optional hooks
    def choose_batches(self, model: nn.Module, cfg: Any, log: Callable[[str], None]) -> None:
        """Once, before training, with the model known: how batches are made (`cfg`: the
        run's config). Most tasks chose in their own setup."""

    def plan_batches(self, lengths: list[int], batch_size: int, seed: int, epoch: int,
                     bucket: bool) -> list[list[int]]:
        """Epoch `epoch`'s batches, as example indices."""
        return plan_batches(lengths, batch_size, seed, epoch, bucket)

    def set_step(self, step: int) -> None:
        """Called before each optimizer step (random batches, MLM masks, drawn from it)."""

    def write_samples(self, model: nn.Module, data: Any, step: int, run_dir: Path,
                      device: torch.device, write: bool = True) -> Path | None:
        """After each evaluation when `samples` > 0: generations saved under run_dir."""
        return None

    def test_before(self, inside: Inside, device: torch.device, run_dir: Path, resumed: bool,
                    write: bool, log: Callable[[str], None]) -> dict[str, float] | None:
        """Test-split scores before training, for tasks scored by generation on a test
        split (None: the task has none)."""
        return None

    def test_after(self, inside: Inside, device: torch.device, run_dir: Path, write: bool,
                   log: Callable[[str], None]) -> dict[str, float] | None:
        """The same scores after training (None: the task has none)."""
        return None

    def predict(self, model: nn.Module, data: Any, batch_size: int, device: torch.device,
                autocast: torch.autocast | None = None) -> Any:
        """Predictions for `data` (labels, tags); None for a task that does not predict."""
        return None

    @classmethod
    def from_run_info(cls, tokenizer: Any, info: dict[str, Any]) -> "Task":
        """The task of a saved run, from its run.json (to evaluate or predict with it)."""
        raise NotImplementedError(f"a {cls.name} task is not rebuilt from run.json")
