"""StepHook: what a method may ask of the training loop beyond "these parameters train".

Some methods act during training, not only through their layers: AdaLoRA prunes ranks by
importance every step and adds an orthogonality penalty to the loss. The loop calls a hook
at fixed points instead of knowing any method; the defaults do nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch


class StepHook:
    """Called by the loop: `start` once, `extra_loss` per micro-batch, `after_step` once per
    optimizer step (after optimizer.step, before zero_grad: gradients are still there),
    `state_dict` / `load_state_dict` with each checkpoint, `finish` when the run is saved."""

    def start(self, total_steps: int) -> None:
        """The loop knows how many optimizer steps it will take."""

    def extra_loss(self) -> torch.Tensor | None:
        """A term added to the step's loss (once per step, however many micro-batches)."""
        return None

    def after_step(self, step: int) -> dict[str, float]:
        """`step` counts from 0. Returns numbers to log with the step's train record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values a resumed run needs to continue exactly."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def finish(self, run_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        """Write the hook's own artifacts (a plot) and return entries for summary.json."""
        return {}
