"""One run, start to finish: config -> data -> model -> method -> loop -> saved artifacts."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from tunelab import methods
from tunelab.config import RunConfig, dump_config
from tunelab.errors import CheckpointError, ConfigError
from tunelab.io import DiskFullError, atomic_dir, write_text
from tunelab.methods.peft_format import init_from_adapter, save_adapter
from tunelab.models.quantize import quantize_model
from tunelab.recipes.base import Setup
from tunelab.recipes.distill import with_teacher
from tunelab.recipes.multitask import save_task_runs
from tunelab.recipes.setup import setup
from tunelab.runs.layout import (
    ADAPTER_DIR,
    MODEL_DIR,
    check_replaceable,
    read_run_info,
    write_json,
)
from tunelab.runs.trained import run_chain
from tunelab.tasks.base import Task
from tunelab.train import checkpoint as ckpt
from tunelab.train import distributed, fsdp
from tunelab.train.distributed import Dist
from tunelab.train.loop import METRICS_FILE, Trainer
from tunelab.train.plots import plot_history, summary_lines
from tunelab.train.trackers import Trackers, require

# Keys that may differ between an interrupted run and its resumption (they do not change
# what is computed, only how often it is logged or saved).
RESUME_FREE_KEYS = {"train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                    "output_dir"}  # a run directory may be moved or copied


# runs whose artifact is not one model or adapter: a multitask run writes a sub-run per task
ARTIFACT_SAVERS: dict[str, Callable[..., Path]] = {"multitask": save_task_runs}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def pick_device(choice: str, dist: Dist = Dist()) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda was asked for but no GPU is visible; use auto or cpu")
    if choice in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def prepare_output(cfg: RunConfig, resume: bool, overwrite: bool, dist: Dist = Dist()) -> Path:
    """Refuse to mix runs: an old run is continued (--resume) or replaced (--overwrite).
    Every rank checks; then rank 0 alone changes the directory."""
    run_dir = Path(cfg.output_dir)
    saved = run_dir / "config.yaml"
    if resume:
        if not saved.is_file():
            raise CheckpointError(f"--resume: {run_dir} holds no earlier run (no config.yaml)")
        diffs = config_diff(yaml.safe_load(saved.read_text()), cfg.model_dump(mode="json"))
        diffs = [d for d in diffs if d.split(":")[0] not in RESUME_FREE_KEYS]
        if diffs:
            raise CheckpointError(f"--resume: the config differs from the run in {run_dir}: "
                                  + "; ".join(diffs[:5]) + "; resume with the same config or "
                                  "train into a new output_dir")
    else:
        check_replaceable(run_dir, overwrite, "run", resumable=True)
    dist.barrier()  # every rank has checked before rank 0 changes anything
    if dist.main:
        if not resume and run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    return run_dir


def config_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += config_diff(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False,
          log: Callable[[str], None] = print, *, splits: Any = None,
          on_eval: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train one validated config. `splits` replaces the data the config names (a
    cross-validation fold: classification and token classification); `on_eval` sees every
    dev evaluation and may raise to stop the run (a tuner pruning a trial)."""
    t_start = time.perf_counter()
    dist = distributed.init()
    log = log if dist.main else _quiet  # rank 0 reports for all
    device = pick_device(cfg.train.device, dist)
    seed_everything(cfg.train.seed)
    require(cfg.train.report_to)  # a missing tracker package fails before any weights load
    s, report = build_run(cfg, log, splits, device)
    run_dir = prepare_output(cfg, resume, overwrite, dist)
    saves_adapter = methods.METHODS[cfg.method.name].saves_adapter
    if dist.main:
        write_run_files(cfg, s, run_dir, dist.world, saves_adapter)
    s.model.to(device)
    privacy = _private(cfg, s)
    trackers = Trackers.from_names(cfg.train.report_to if dist.main else [], run_dir,
                                   cfg.model_dump(mode="json"))
    trainer = Trainer(s.model, s.task, s.train, s.dev, cfg.train, run_dir, device, log, dist,
                      lr_scales=report.lr_scales, on_eval=on_eval, hook=report.hook,
                      privacy=privacy, trackers=trackers)
    start = trainer.resume() if resume else 0
    log(_plan_line(cfg, trainer, device, dist))
    # tasks scored by generation on a test split (translation) are scored before and after
    test_before = s.task.test_before(trainer.inside, device, run_dir, start > 0, dist.main, log)
    try:
        result = trainer.fit(start)
    except BaseException:  # interrupted (SIGTERM) or failed: close the trackers' files
        trackers.finish()
        raise
    if privacy is not None:
        privacy.close()

    restored = cfg.train.load_best_at_end and result.best is not None and trainer.restore_best()
    final = trainer.evaluate() if restored else result.last_eval
    test = s.task.test_after(trainer.inside, device, run_dir, dist.main, log) \
        if test_before is not None else None
    # FSDP: every rank gathers the shards, rank 0 writes them whole
    whole = fsdp.model_state(s.model) if trainer.fsdp and not saves_adapter else None
    with trainer.gathered():
        if dist.main:
            out = _save_artifact(s, cfg, report, saves_adapter, run_dir, whole, final)
    if not dist.main:
        dist.barrier()  # wait for rank 0 to finish writing, then leave
        return {"rank": dist.rank, "final_dev": final}
    summary = {"task": cfg.task, "metric": trainer.metric, **_outcome(result, trainer, final),
               "dev_examples": len(s.dev), "restored_best": bool(restored),
               **({"test_before": test_before, "test": test} if test is not None else {}),
               "wall_seconds": time.perf_counter() - t_start, "precision": trainer.precision,
               "trainable": report.trainable, "total": report.total,
               **_files(run_dir, out, saves_adapter, result.history),
               **trainer.hook.finish(run_dir, log),
               **({"privacy": privacy.summary(result.steps)} if privacy is not None else {})}
    write_json(run_dir / "summary.json", summary)
    trackers.finish([run_dir / "plot.png", run_dir / "summary.json"])
    if privacy is not None:  # run.json: what a later command (and the report) must know
        write_json(run_dir / "run.json", {**read_run_info(run_dir), "privacy": summary["privacy"]})
        log(f"privacy: {summary['privacy']['guarantee']}")
    for line in summary_lines(summary):
        log(line)
    dist.barrier()
    return summary


def _private(cfg: RunConfig, s: Setup) -> Any:
    """DP-SGD's engine (train/privacy.py) when the config has privacy:, else None; Opacus
    loads only then."""
    if cfg.privacy is None:
        return None
    from tunelab.train.privacy import PrivateTraining

    if getattr(s.task, "packing", False):
        raise ConfigError("data.packing: packed rows mix examples, so a row's gradient is not "
                          "one example's; set data.packing: false with privacy")
    return PrivateTraining(cfg.privacy, cfg.train, len(s.train))


def build_run(cfg: RunConfig, log: Callable[[str], None], splits: Any,
           device: torch.device) -> tuple[Setup, Any]:
    """Data, model and task (data first: errors before weights load), then the method (and
    the teacher, when distilling)."""
    s = setup(cfg, log, splits)
    if getattr(cfg, "distill", None) is not None:
        with_teacher(cfg, s, device, log)
    if cfg.model.quantize is not None:  # the frozen base in 4 or 8 bits, before the method
        for line in quantize_model(s.model, cfg.model.quantize, cfg.model.compute_dtype).lines():
            log(line)
    report = methods.apply(s.model, cfg.method, cfg.train.head_lr_scale)
    for line in report.lines():
        log(line)
    if cfg.model.init_adapter:
        init_from_adapter(s.model, cfg.model.init_adapter, cfg.method.name)
        log(f"adapter and head weights start from {cfg.model.init_adapter}")
    choose_batches(cfg, s.task, s.model, log)
    return s, report


def write_run_files(cfg: RunConfig, s: Setup, run_dir: Path, world: int,
                     saves_adapter: bool) -> None:
    """config.yaml and run.json: what ran, and what a later command needs to load it."""
    write_text(run_dir / "config.yaml", dump_config(cfg))
    write_json(run_dir / "run.json", {"task": cfg.task, "base_model": str(s.model_path),
                                      "model_name": cfg.model.name, "method": cfg.method.name,
                                      "artifact": ADAPTER_DIR if saves_adapter else MODEL_DIR,
                                      "max_length": cfg.model.max_length, "world_size": world,
                                      **({"keep_layers": cfg.model.keep_layers}
                                         if cfg.model.keep_layers is not None else {}),
                                      **({"quantize": {"scheme": cfg.model.quantize,
                                                       "compute_dtype": cfg.model.compute_dtype}}
                                         if cfg.model.quantize is not None else {}),
                                      **run_chain(cfg.model.name), **s.info})


def _plan_line(cfg: RunConfig, trainer: Trainer, device: torch.device, dist: Dist) -> str:
    return (f"training {trainer.total_steps} steps ({trainer.batches_per_epoch} batches/epoch, "
            f"batch {cfg.train.batch_size} x accum {cfg.train.grad_accum}) on {device.type}, "
            f"{trainer.precision}" + (f", {dist.world} processes "
                                      f"({cfg.train.distributed.upper()})" if dist.active else "")
            + "".join(f", {name}" for name, on in (
                ("gradient checkpointing", cfg.train.gradient_checkpointing),
                ("torch.compile", cfg.train.compile)) if on))  # prepare() compiles when asked


def _outcome(result: Any, trainer: Trainer, final: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json's record of the training itself: steps, selection, scores, speed."""
    return {"best": result.best, "steps": result.steps, "total_steps": result.total_steps,
            "stopped_early": result.stopped_early,
            "initial_dev": _scores(trainer.initial_eval), "final_dev": _scores(final),
            "train_seconds": result.seconds, "train_cpu_seconds": result.cpu_seconds,
            "tokens_per_s": result.tokens / max(result.seconds, 1e-9)}


def _files(run_dir: Path, artifact: Path, saves_adapter: bool,
           history: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's pointers to what the run wrote (plot.png is drawn here)."""
    plot = plot_history(history, run_dir / "plot.png")
    return {"artifact_kind": "adapter" if saves_adapter else "model", "artifact": str(artifact),
            "metrics_file": str(run_dir / METRICS_FILE), "plot": str(plot) if plot else None,
            "checkpoints": str(run_dir / "checkpoints"),
            "last_checkpoint": str(ckpt.list_checkpoints(run_dir / "checkpoints")[-1])}


def choose_batches(cfg: RunConfig, task: Task, model: torch.nn.Module,
                   log: Callable[[str], None]) -> None:
    """How the task makes batches, now that the model is known (classification: packed or
    padded, Task.choose_batches); other tasks chose in their own setup."""
    task.choose_batches(model, cfg, log)


def _save_artifact(s: Any, cfg: RunConfig, report: Any, adapter: bool, run_dir: Path,
                   state: dict[str, torch.Tensor] | None, final: dict[str, Any]) -> Path:
    saver = ARTIFACT_SAVERS.get(cfg.task)
    if saver is not None:
        return saver(s, cfg, adapter, run_dir, final)
    if adapter:
        return save_adapter(s.model, cfg.method, report.head, str(s.model_path),
                            run_dir / ADAPTER_DIR, task=s.info.get("route", cfg.task))
    out = run_dir / MODEL_DIR
    try:
        with atomic_dir(out) as tmp:  # a kill leaves no half-written model/
            s.model.save_pretrained(tmp, state_dict=state)  # state: given under FSDP
            s.tokenizer.save_pretrained(tmp)
    except DiskFullError as exc:
        raise CheckpointError(str(exc)) from None
    return out


def _quiet(_: str) -> None:
    pass


def _scores(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if record is None else {k: v for k, v in record.items() if k not in ("step", "split")}
