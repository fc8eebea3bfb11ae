"""Which evaluation is the best so far, and when to stop for lack of progress.

Both read and update the loop's LoopState, which checkpoints save (its fields are the
checkpoint's "loop" record) and resumption restores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config import EarlyStopping
from tunelab.tasks.metrics import HIGHER_IS_BETTER


@dataclass
class LoopState:
    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time in the steps (all its threads)
    stopped_early: bool = False


class BestTracker:
    """Best-model selection by `metric`: an evaluation is the new best when it beats the best
    so far by more than early_stopping.min_delta (0 without early stopping); otherwise it
    counts as one more without improvement."""

    def __init__(self, metric: str, early_stopping: EarlyStopping | None = None):
        self.metric = metric
        self.min_delta = early_stopping.min_delta if early_stopping else 0.0

    def update(self, state: LoopState, record: dict[str, Any]) -> bool:
        """Note the evaluation `record` in `state`; True when it is the new best."""
        value, best = record[self.metric], state.best_value
        higher, delta = HIGHER_IS_BETTER[self.metric], self.min_delta
        if best is None or (value > best + delta if higher else value < best - delta):
            state.best_value, state.best_step, state.bad_evals = value, record["step"], 0
            return True
        state.bad_evals += 1
        return False

    def best(self, state: LoopState) -> dict[str, Any] | None:
        """{"step": ..., metric: ...} of the best evaluation, None before any."""
        if state.best_step is None:
            return None
        return {"step": state.best_step, self.metric: state.best_value}


class EarlyStopper:
    """train.early_stopping: stop after `patience` evaluations without improvement."""

    def __init__(self, cfg: EarlyStopping | None):
        self.cfg = cfg

    def check(self, state: LoopState) -> bool:
        """Set (and return) state.stopped_early after an evaluation."""
        state.stopped_early = self.cfg is not None and state.bad_evals >= self.cfg.patience
        return state.stopped_early
