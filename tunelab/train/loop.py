"""The one training loop: accumulation, clipping, schedules, eval, early stopping,
best-model tracking, atomic checkpoints, exact resume and graceful interruption.

The Trainer prepares the model (prepare.py) and builds optimizer and schedule; `fit` runs
optimizer steps, each followed by whichever of log, evaluate, checkpoint and stop are due
(selection.py: best model, early stopping; metrics_log.py: metrics.jsonl)."""

from __future__ import annotations

import math
import time
from contextlib import closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from tunelab.config import TrainConfig
from tunelab.data.batching import Encoded
from tunelab.methods.hooks import StepHook
from tunelab.tasks.base import Task
from tunelab.train import checkpoint as ckpt
from tunelab.train import fsdp
from tunelab.train.batches import StepBatches
from tunelab.train.distributed import Dist
from tunelab.train.metrics_log import METRICS_FILE, MetricsLog, Window
from tunelab.train.optim import build_optimizer, build_scheduler
from tunelab.train.prepare import autocast_for, prepare
from tunelab.train.selection import BestTracker, EarlyStopper, LoopState
from tunelab.train.signals import Interrupted, stop_on_signals
from tunelab.train.trackers import Trackers

if TYPE_CHECKING:  # Opacus loads only for private runs
    from tunelab.train.privacy import PrivateTraining

__all__ = ["METRICS_FILE", "FitResult", "LoopState", "Trainer"]


@dataclass
class FitResult:
    steps: int
    total_steps: int
    best: dict[str, Any] | None  # {"step": ..., metric: ...} of the best evaluation
    last_eval: dict[str, Any]
    stopped_early: bool
    seconds: float
    tokens: int
    history: list[dict[str, Any]] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the steps' CPU time in this process (all threads)


class Trainer:
    """Runs `task` on `model` with the settings in `cfg`, writing into `run_dir`."""

    def __init__(self, model: nn.Module, task: Task, train: Encoded, dev: Encoded,
                 cfg: TrainConfig, run_dir: Path, device: torch.device,
                 log: Callable[[str], None] = print, dist: Dist = Dist(),
                 lr_scales: dict[str, float] | None = None,
                 on_eval: Callable[[dict[str, Any]], None] | None = None,
                 hook: StepHook | None = None, privacy: "PrivateTraining | None" = None,
                 trackers: Trackers | None = None):
        self.model, self.task, self.train, self.dev = model, task, train, dev
        self.cfg, self.run_dir, self.device, self.log, self.dist = cfg, run_dir, device, log, dist
        # called with each dev record as it is logged; an exception it raises (a tuner's
        # prune signal) ends the run there, uncheckpointed
        self.on_eval = on_eval
        self.fsdp = dist.active and cfg.distributed == "fsdp"
        self.hook = hook or StepHook()  # the method's per-step code (AdaLoRA), else nothing
        self.forward = prepare(model, task, cfg, device, dist, log, hook)
        self.batches = StepBatches(task, train, cfg)
        self.batches_per_epoch = self.batches.per_epoch
        steps_from_epochs = math.ceil(cfg.epochs * self.batches_per_epoch / cfg.grad_accum)
        self.total_steps = cfg.max_steps or max(1, steps_from_epochs)
        self.optimizer = build_optimizer(model, cfg, fused=not self.fsdp, lr_scales=lr_scales)
        self.privacy = privacy  # DP-SGD: Poisson batches, per-example clipping, noise
        if privacy is not None:  # (a noise budget may end the run before total_steps)
            self.total_steps = privacy.start(model, self.optimizer, self.total_steps, dist, log)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        self.autocast, self.precision = autocast_for(cfg.precision, device)
        self.state = LoopState()
        self.checkpoints = ckpt.RunCheckpoints(run_dir, model, self.optimizer, self.scheduler,
                                               dist, self.gathered, self.fsdp,
                                               cfg.keep_checkpoints)
        self.metrics = MetricsLog(run_dir, write=dist.main, sinks=[trackers.log]
                                  if trackers is not None and dist.main else [])
        self.metric = cfg.metric or task.default_metric
        self.best = BestTracker(self.metric, cfg.early_stopping)
        self.stopper = EarlyStopper(cfg.early_stopping)
        self.initial_eval: dict[str, Any] | None = None
        self.hook.start(self.total_steps)
        self.hook_log: dict[str, float] = {}

    # ------------------------------------------------------------------ the loop
    def fit(self, start_step: int = 0) -> FitResult:
        """Train from `start_step` to the last step or an early stop."""
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        step, last_eval, window = start_step, {}, Window()
        bar = tqdm(total=self.total_steps, initial=start_step, desc="train", unit="step",
                   dynamic_ncols=True, mininterval=1.0, disable=not self.dist.main)
        with self.metrics.opened(), closing(bar):
            if start_step == 0 and not self.metrics.history and self.cfg.eval_at_start:
                # the untrained model: the baseline every later number is compared with
                self.initial_eval = self._evaluate(0)
            with stop_on_signals() as stop:
                while step < self.total_steps and not self.state.stopped_early:
                    self._timed_step(step, trainable, window)
                    step += 1
                    bar.update(1)
                    if self._due(self.cfg.log_every, step):
                        self._log_train(step, window, bar)
                        window = Window()
                    if self._due(self.cfg.eval_every, step):
                        last_eval = self._evaluate(step)
                        self.stopper.check(self.state)
                    if self._due(self.cfg.checkpoint_every, step) or self.state.stopped_early:
                        self._checkpoint(step)
                    self._stop_if_asked(step, stop)
        if not last_eval:  # resumed a run that had already finished
            last_eval = {"step": step, "split": "dev", **self.evaluate()}
        return FitResult(step, self.total_steps, self.best.best(self.state), last_eval,
                         self.state.stopped_early, self.state.seconds, self.state.tokens,
                         self.metrics.history, self.state.cpu_seconds)

    def _due(self, every: int | None, step: int) -> bool:
        """Every `every` steps (None: never), and always at the last step."""
        return bool(every and step % every == 0) or step == self.total_steps

    def _timed_step(self, step: int, trainable: list[nn.Parameter], window: Window) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        loss, n, tokens = self._step(step, trainable)
        window.add(loss, n, tokens, time.perf_counter() - t0)
        self.state.cpu_seconds += time.process_time() - c0

    def _step(self, step: int, trainable: list[nn.Parameter]) -> tuple[float, int, int]:
        """One optimizer step over grad_accum micro-batches; the loss is the mean per example
        over the whole step, however the examples are split."""
        parts = self.micro_batches(step)
        self.task.set_step(step)  # random batches (MLM masks) are drawn from the step
        # the data each micro-batch indexes: its epoch's (a step may straddle two epochs)
        data = [self.epoch_data((step * self.cfg.grad_accum + k) // self.batches_per_epoch)
                for k in range(len(parts))]
        n = max(1, sum(self.task.units(d, p) for (d, _), p in zip(data, parts)))  # over all ranks
        # DDP averages gradients over ranks; scaling by the world size turns that into the sum.
        # DP-SGD needs each example's own loss: it divides by the expected batch itself.
        scale = self.dist.world / n if self.privacy is None else 1.0
        total, tokens = 0.0, 0
        for k, ((train, lengths), index) in enumerate(zip(data, parts)):
            if not index:  # a Poisson sample (DP-SGD) may leave a micro-batch empty
                continue
            tokens += sum(lengths[i] for i in index)
            local = self.dist.shard(index)
            weight = scale if local else 0.0  # a rank with no example still joins the all-reduce
            batch = {k: v.to(self.device, non_blocking=True)
                     for k, v in self.task.collate(train, local or index[:1]).items()}
            with self.autocast or nullcontext():
                loss = self.forward(batch)
            scaled = loss * weight
            extra = self.hook.extra_loss() if k == 0 else None  # a penalty on the weights:
            if extra is not None:  # computed and back-propagated once per step
                scaled = scaled + extra
            scaled.backward()
            if self.privacy is not None:
                self.privacy.after_backward()
            total += loss.item() if local else 0.0
        if self.dist.active:  # the logged loss covers every rank's examples
            t = torch.tensor([total])
            torch.distributed.all_reduce(t)
            total = t.item()
        if self.privacy is not None:
            self.privacy.finish_step(step)  # clipped per example: no clipping of the sum
        elif self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.hook_log = self.hook.after_step(step)  # sees this step's gradients
        if self.privacy is not None:
            self.privacy.after_step(step)  # the accountant counts the step
        self.optimizer.zero_grad(set_to_none=True)
        return total, n, tokens

    def _log_train(self, step: int, w: Window, bar: tqdm) -> None:
        """The training record of the steps since the last one."""
        self.state.seconds += w.time
        self.state.tokens += w.tokens
        spent = {"epsilon": self.privacy.epsilon()} if self.privacy is not None else {}
        record = w.record(step, self.scheduler.get_last_lr()[0],
                          step * self.cfg.grad_accum / self.batches_per_epoch,
                          {**self.hook_log, **spent})
        self.metrics.write(record)
        bar.set_postfix(loss=f"{record['train_loss']:.4f}", lr=f"{record['lr']:.2e}",
                        tok_s=f"{record['tokens_per_s']:.0f}", refresh=False,
                        **({"eps": f"{_finite(record['epsilon']):.3g}"}
                           if "epsilon" in record else {}))

    def _evaluate(self, step: int) -> dict[str, Any]:
        """Score dev and log it; keep the weights when they are the best so far."""
        record = {"step": step, "split": "dev", **self.evaluate()}
        self.metrics.write(record)
        if self.task.samples and (self.dist.main or self.fsdp):
            # under FSDP every rank generates (each forward is a collective); rank 0 writes
            self.inside(lambda m: self.task.write_samples(m, self.dev, step, self.run_dir,
                                                          self.device, write=self.dist.main))
        if self.best.update(self.state, record):
            self.checkpoints.save_best()
        if self.on_eval is not None:
            self.on_eval(record)
        return record

    def _stop_if_asked(self, step: int, stop: Any) -> None:
        """After an early stop, say why; on a signal (seen by any rank), checkpoint and raise."""
        if self.state.stopped_early:
            self.log(f"early stopping at step {step}: {self.metric} has not improved "
                     f"for {self.state.bad_evals} evaluations")
        elif self.dist.any(bool(stop)):
            path = self._checkpoint(step)
            raise Interrupted(f"{stop.signal or 'signal'} at step {step}/{self.total_steps}: "
                              f"checkpoint saved to {path}; continue with --resume")

    # ------------------------------------------------------------------ batches
    def epoch_data(self, epoch: int) -> tuple[Encoded, list[int]]:
        """(training data, lengths) of `epoch` (see StepBatches)."""
        return self.batches.epoch_data(epoch)

    def micro_batches(self, step: int) -> list[list[int]]:
        """The index lists optimizer step `step` consumes: a pure function of the step."""
        if self.privacy is not None:  # Poisson sampling, the sampling DP-SGD's guarantee assumes
            epoch = step * self.cfg.grad_accum // self.batches_per_epoch
            return self.privacy.micro_batches(step, self.epoch_data(epoch)[1])
        return self.batches.micro_batches(step)

    # ------------------------------------------------------------------ checkpoints
    def resume(self) -> int:
        """Load the newest checkpoint; returns the step to continue from (0 if none)."""
        latest = self.checkpoints.load_latest()
        if latest is None:  # interrupted before the first checkpoint: start over, log included
            self.metrics.truncate(-1)
            return 0
        path, state = latest
        self.state = LoopState(**state["loop"])
        self.hook.load_state_dict(state.get("hook", {}))
        history = self.metrics.truncate(state["step"])
        self.dist.barrier()
        self.initial_eval = next((r for r in history
                                  if r.get("split") == "dev" and r["step"] == 0), None)
        self.log(f"resumed from {path} (step {state['step']}/{self.total_steps})")
        return int(state["step"])

    def _checkpoint(self, step: int) -> Path:
        return self.checkpoints.save(step, vars(self.state), self.hook.state_dict)

    def restore_best(self) -> bool:
        return self.checkpoints.restore_best()

    # ------------------------------------------------------------------ the model
    def gathered(self):
        """Whole parameters inside (every rank enters; FSDP only): for code that reads weights."""
        return fsdp.gathered(self.forward) if self.fsdp else nullcontext()

    def inside(self, fn: Callable[[nn.Module], Any]) -> Any:
        """fn(model), run where the model's forward works: within the FSDP root's forward."""
        if not self.fsdp:
            return fn(self.model)
        out = self.forward(None, inside=fn)
        fsdp.reshard(self.forward)
        return out

    def evaluate(self) -> dict[str, Any]:
        return self.inside(lambda m: self.task.evaluate(m, self.dev, self.cfg.eval_batch_size,
                                                        self.device, self.autocast))


def _finite(eps: float | None) -> float:
    """Epsilon for the progress bar: None (no noise, no guarantee) shows as inf."""
    return math.inf if eps is None else eps
