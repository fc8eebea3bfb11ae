"""The one training loop: accumulation, clipping, schedules, eval, early stopping,
best-model tracking, atomic checkpoints, exact resume and graceful interruption."""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from tunelab.config import TrainConfig
from tunelab.data.batching import Encoded, plan_batches
from tunelab.errors import ConfigError
from tunelab.kernels.dropout_attention import use_dropout_attention
from tunelab.kernels.fast_dropout import use_fast_dropout
from tunelab.methods.hooks import StepHook
from tunelab.tasks.metrics import HIGHER_IS_BETTER
from tunelab.train import checkpoint as ckpt
from tunelab.train import fsdp
from tunelab.train.distributed import Dist, wrap
from tunelab.train.optim import build_optimizer, build_scheduler
from tunelab.train.signals import Interrupted, stop_on_signals

METRICS_FILE = "metrics.jsonl"


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


@dataclass
class LoopState:
    best_value: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    tokens: int = 0
    seconds: float = 0.0
    stopped_early: bool = False


class Trainer:
    """Runs `task` on `model` with the settings in `cfg`, writing into `run_dir`."""

    def __init__(self, model: nn.Module, task: Any, train: Encoded, dev: Encoded, cfg: TrainConfig,
                 run_dir: Path, device: torch.device, log: Callable[[str], None] = print,
                 dist: Dist = Dist(), lr_scales: dict[str, float] | None = None,
                 on_eval: Callable[[dict[str, Any]], None] | None = None,
                 hook: StepHook | None = None):
        self.model, self.task, self.train, self.dev = model, task, train, dev
        # called with each dev record as it is logged; an exception it raises (a tuner's
        # prune signal) ends the run there, uncheckpointed
        self.on_eval = on_eval
        self.dist = dist
        if cfg.gradient_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ConfigError("train.gradient_checkpointing: this model does not support it")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        use_fast_dropout(model)  # the CPU dropout mask is a tenth of a small model's step
        if device.type == "cpu":
            use_dropout_attention(model)  # and in attention it also costs SDPA its fused kernel
        self.fsdp = dist.active and cfg.distributed == "fsdp"
        # DDP (or FSDP) under torchrun, the loss module otherwise
        self.forward = wrap(model, task, dist, cfg.distributed)
        if cfg.compile:
            self.forward = torch.compile(self.forward, dynamic=True)
        self.cfg, self.run_dir, self.device, self.log = cfg, run_dir, device, log
        self._epochs: dict[int, tuple[Encoded, list[int]]] = {}
        self.batches_per_epoch = len(self._plan(0))
        steps_from_epochs = math.ceil(cfg.epochs * self.batches_per_epoch / cfg.grad_accum)
        self.total_steps = cfg.max_steps or max(1, steps_from_epochs)
        self.optimizer = build_optimizer(model, cfg, fused=not self.fsdp,
                                         lr_scales=lr_scales)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps)
        use_bf16 = cfg.precision == "bf16" or (
            cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else None
        self.precision = "bf16" if use_bf16 else "fp32"
        self.state = LoopState()
        self._plans: dict[int, list[list[int]]] = {}
        self.ckpt_dir = run_dir / "checkpoints"
        self.history: list[dict[str, Any]] = []
        self.metric = cfg.metric or task.default_metric
        self.initial_eval: dict[str, Any] | None = None
        self.hook = hook or StepHook()  # the method's per-step code (AdaLoRA), else nothing
        if hook is not None and self.fsdp:
            raise ConfigError(f"train.distributed: fsdp shards the parameters, and this method's "
                              f"{type(hook).__name__} needs them whole every step; use ddp")
        self.hook.start(self.total_steps)
        self.hook_log: dict[str, float] = {}

    # ------------------------------------------------------------------ batches
    def epoch_data(self, epoch: int) -> tuple[Encoded, list[int]]:
        """(training data, lengths) of `epoch`: the same every epoch, unless the data are
        drawn anew per epoch (augmentation on the fly: `for_epoch`, a function of the epoch)."""
        if epoch not in self._epochs:
            for_epoch = getattr(self.train, "for_epoch", None)
            data = for_epoch(epoch) if for_epoch else self.train
            self._epochs = {k: v for k, v in self._epochs.items() if k == epoch - 1}
            self._epochs[epoch] = (data, data.lengths())
        return self._epochs[epoch]

    def _plan(self, epoch: int) -> list[list[int]]:
        plan = getattr(self.task, "plan_batches", plan_batches)  # a multitask run plans its own
        return plan(self.epoch_data(epoch)[1], self.cfg.batch_size, self.cfg.seed, epoch,
                    self.cfg.bucket_by_length)

    def micro_batches(self, step: int) -> list[list[int]]:
        """The index lists optimizer step `step` consumes: a pure function of the step."""
        out = []
        for g in range(step * self.cfg.grad_accum, (step + 1) * self.cfg.grad_accum):
            epoch, i = divmod(g, self.batches_per_epoch)
            if epoch not in self._plans:
                self._plans = {epoch: self._plan(epoch)}
            out.append(self._plans[epoch][i])
        return out

    # ------------------------------------------------------------------ resume
    def resume(self) -> int:
        """Load the newest checkpoint; returns the step to continue from (0 if none)."""
        found = ckpt.list_checkpoints(self.ckpt_dir)
        if not found:  # interrupted before the first checkpoint: start over, log included
            _truncate_metrics(self.run_dir / METRICS_FILE, -1, write=self.dist.main)
            return 0
        state = ckpt.load_checkpoint(found[-1], self.model, self.optimizer, self.scheduler)
        self.state = LoopState(**state["loop"])
        self.hook.load_state_dict(state.get("hook", {}))
        self.history = _truncate_metrics(self.run_dir / METRICS_FILE, state["step"],
                                         write=self.dist.main)
        self.dist.barrier()
        self.initial_eval = next((r for r in self.history
                                  if r.get("split") == "dev" and r["step"] == 0), None)
        self.log(f"resumed from {found[-1]} (step {state['step']}/{self.total_steps})")
        return int(state["step"])

    def _checkpoint(self, step: int) -> Path:
        """Rank 0 writes (DDP keeps every rank's weights identical; FSDP gathers its shards
        first, a collective); the others wait for it."""
        path = self.ckpt_dir / f"step-{step:07d}"
        by_name = fsdp.optimizer_state(self.model, self.optimizer) if self.fsdp else None
        with self.gathered():
            if self.dist.main:
                ckpt.save_checkpoint(self.ckpt_dir, step, self.model, self.optimizer,
                                     self.scheduler, {"loop": vars(self.state)},
                                     self.cfg.keep_checkpoints, by_name, self.hook.state_dict())
        self.dist.barrier()
        return path

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

    # ------------------------------------------------------------------ the loop
    def fit(self, start_step: int = 0) -> FitResult:
        cfg, model = self.cfg, self.model
        model.train()
        trainable = [p for p in model.parameters() if p.requires_grad]
        metrics_file = (self.run_dir / METRICS_FILE).open("a", encoding="utf-8") if self.dist.main \
            else open(os.devnull, "w")
        # Throughput counts optimizer steps only: evaluation and checkpoints are timed apart.
        run_loss, run_n, run_tokens, run_time = 0.0, 0, 0, 0.0
        stopped_early, step = self.state.stopped_early, start_step
        last_eval: dict[str, Any] = {}
        bar = tqdm(total=self.total_steps, initial=start_step, desc="train", unit="step",
                   dynamic_ncols=True, mininterval=1.0, disable=not self.dist.main)
        try:
            if start_step == 0 and not self.history and cfg.eval_at_start:
                # the untrained model: the baseline every later number is compared with
                self.initial_eval = self._evaluate(0, metrics_file)
            with stop_on_signals() as stop:
                while step < self.total_steps and not stopped_early:
                    t0 = time.perf_counter()
                    loss, n, tokens = self._step(step, trainable)
                    run_time += time.perf_counter() - t0
                    step += 1
                    run_loss, run_n, run_tokens = run_loss + loss, run_n + n, run_tokens + tokens
                    bar.update(1)
                    if step % cfg.log_every == 0 or step == self.total_steps:
                        self.state.seconds += run_time
                        self.state.tokens += run_tokens
                        record = {"step": step, "train_loss": run_loss / max(run_n, 1),
                                  "lr": self.scheduler.get_last_lr()[0],
                                  "tokens_per_s": run_tokens / max(run_time, 1e-9),
                                  "epoch": step * cfg.grad_accum / self.batches_per_epoch,
                                  **self.hook_log}
                        self._write(metrics_file, record)
                        bar.set_postfix(loss=f"{record['train_loss']:.4f}", lr=f"{record['lr']:.2e}",
                                        tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
                        run_loss, run_n, run_tokens, run_time = 0.0, 0, 0, 0.0
                    if (cfg.eval_every and step % cfg.eval_every == 0) or step == self.total_steps:
                        last_eval = self._evaluate(step, metrics_file)
                        stopped_early = self.state.stopped_early = self._early_stop()
                    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 or \
                            step == self.total_steps or stopped_early:
                        self._checkpoint(step)
                    if stopped_early:
                        self.log(f"early stopping at step {step}: {self.metric} has not improved "
                                 f"for {self.state.bad_evals} evaluations")
                        break
                    if self.dist.any(bool(stop)):
                        path = self._checkpoint(step)
                        raise Interrupted(f"{stop.signal or 'signal'} at step {step}/{self.total_steps}: "
                                          f"checkpoint saved to {path}; continue with --resume")
        finally:
            bar.close()
            metrics_file.close()
        if not last_eval:  # resumed a run that had already finished
            last_eval = self._evaluate(step, None)
        best = None
        if self.state.best_step is not None:
            best = {"step": self.state.best_step, self.metric: self.state.best_value}
        return FitResult(step, self.total_steps, best, last_eval, stopped_early,
                         self.state.seconds, self.state.tokens, self.history)

    def _step(self, step: int, trainable: list[nn.Parameter]) -> tuple[float, int, int]:
        """One optimizer step over grad_accum micro-batches; the loss is the mean per example
        over the whole step, however the examples are split."""
        parts = self.micro_batches(step)
        if hasattr(self.task, "set_step"):  # random batches (MLM masks) are drawn from the step
            self.task.set_step(step)
        # the data each micro-batch indexes: its epoch's (a step may straddle two epochs)
        data = [self.epoch_data((step * self.cfg.grad_accum + k) // self.batches_per_epoch)
                for k in range(len(parts))]
        n = max(1, sum(self.task.units(d, p) for (d, _), p in zip(data, parts)))  # over all ranks
        # DDP averages gradients over ranks; scaling by the world size turns that into the sum.
        scale = self.dist.world / n
        total, tokens = 0.0, 0
        for k, ((train, lengths), index) in enumerate(zip(data, parts)):
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
            total += loss.item() if local else 0.0
        if self.dist.active:  # the logged loss covers every rank's examples
            t = torch.tensor([total])
            torch.distributed.all_reduce(t)
            total = t.item()
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainable, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.hook_log = self.hook.after_step(step)  # sees this step's gradients
        self.optimizer.zero_grad(set_to_none=True)
        return total, n, tokens

    def _evaluate(self, step: int, metrics_file: Any) -> dict[str, Any]:
        record = {"step": step, "split": "dev", **self.evaluate()}
        if metrics_file is None:
            return record
        self._write(metrics_file, record)
        if hasattr(self.task, "write_samples") and (self.dist.main or self.fsdp):
            # under FSDP every rank generates (each forward is a collective); rank 0 writes
            self.inside(lambda m: self.task.write_samples(m, self.dev, step, self.run_dir,
                                                          self.device, write=self.dist.main))
        value, better = record[self.metric], HIGHER_IS_BETTER[self.metric]
        delta = self.cfg.early_stopping.min_delta if self.cfg.early_stopping else 0.0
        best = self.state.best_value
        if best is None or (value > best + delta if better else value < best - delta):
            self.state.best_value, self.state.best_step, self.state.bad_evals = value, step, 0
            with self.gathered():
                if self.dist.main:
                    ckpt.save_weights(self.model, self.run_dir / "best")
        else:
            self.state.bad_evals += 1
        if self.on_eval is not None:
            self.on_eval(record)
        return record

    def _early_stop(self) -> bool:
        es = self.cfg.early_stopping
        return es is not None and self.state.bad_evals >= es.patience

    def _write(self, f: Any, record: dict[str, Any]) -> None:
        self.history.append(record)
        f.write(json.dumps(record) + "\n")
        f.flush()

    def restore_best(self) -> bool:
        self.dist.barrier()  # rank 0 wrote it
        best = self.run_dir / "best" / ckpt.WEIGHTS
        if not best.is_file():
            return False
        ckpt.load_trainable(self.model, best)
        return True


def _truncate_metrics(path: Path, step: int, write: bool = True) -> list[dict[str, Any]]:
    """Drop records an interrupted run logged after its last checkpoint; return the rest."""
    if not path.is_file():
        return []
    kept = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= step]
    if write:
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept
