"""A multitask run's setup and saved layout.

Each task is set up exactly as a single-task run of its own (the same config sections, with
the task's data), then the task models are joined into one MultiTaskModel. At the end each
task is written as a sub-run, `RUN/tasks/NAME/`, with its own config.yaml, run.json and
adapter/ (or model/): a run directory `tunelab eval` and `tunelab predict` load as they load
any other, and `peft` loads as a standard AutoModelFor... adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tunelab.config import (
    ClassificationRun,
    MultiTaskRun,
    TokenClassificationRun,
    dump_config,
    validate,
)
from tunelab.data.task_sampling import TaskSchedule
from tunelab.methods.peft_format import save_adapter
from tunelab.models.heads import head_modules
from tunelab.recipes.base import Setup
from tunelab.recipes.classification import classification
from tunelab.recipes.token_classification import token_classification
from tunelab.runs.layout import ADAPTER_DIR, MODEL_DIR, write_json
from tunelab.tasks.multitask import MultiData, MultiTask, MultiTaskModel

TASKS_DIR = "tasks"


def part_config(cfg: MultiTaskRun, name: str, output_dir: str | Path
                ) -> ClassificationRun | TokenClassificationRun:
    """The single-task config of one task: the run's model, method and train sections, the
    task's data."""
    tree = cfg.model_dump(mode="json")
    part = tree["tasks"][name]
    sub = {"task": part["task"], "data": part["data"], "model": tree["model"],
           "method": tree["method"], "train": tree["train"], "output_dir": str(output_dir)}
    return validate(sub, source=f"tasks.{name}")  # type: ignore[return-value]


PART_SETUPS: dict[str, Callable[..., Setup]] = {"classification": classification,
                                                "token_classification": token_classification}


def multitask(cfg: MultiTaskRun, log: Callable[[str], None]) -> Setup:
    parts: dict[str, Setup] = {}
    for name in cfg.tasks:
        sub = part_config(cfg, name, Path(cfg.output_dir) / TASKS_DIR / name)
        log(f"task {name} ({sub.task}):")
        parts[name] = PART_SETUPS[sub.task](sub, lambda line: log(f"  {line}"))
    model = MultiTaskModel({k: s.model for k, s in parts.items()}, cfg.adapter)
    task = MultiTask({k: s.task for k, s in parts.items()}, cfg.sampling, cfg.temperature)
    task.train_sizes = {k: len(s.train) for k, s in parts.items()}
    train = MultiData({k: s.train for k, s in parts.items()})
    dev = MultiData({k: s.dev for k, s in parts.items()})
    first = next(iter(parts.values()))
    base = type(first.model.base_model).__name__
    what = "shared by the tasks" if cfg.adapter == "shared" else \
        "frozen weights shared by the tasks (an adapter each)"
    log(f"{what}: {', '.join(f'{base}.{n}' for n in model.shared)}; one head each: "
        f"{', '.join(model.head_names)}")
    schedule = TaskSchedule({k: s.train.lengths() for k, s in parts.items()},
                            cfg.train.batch_size, cfg.train.seed, cfg.train.bucket_by_length,
                            cfg.sampling, cfg.temperature)
    how = {"proportional": "in proportion to examples",
           "temperature": f"in proportion to examples^(1/{cfg.temperature:g})",
           "round_robin": "equally, in turn"}[cfg.sampling]
    log(f"sampling: {cfg.sampling} ({how}); batches per epoch: " + ", ".join(
        f"{k} {schedule.quotas[k]} (of {schedule.batches[k]})" for k in parts))
    info = {"artifact": TASKS_DIR, "sampling": cfg.sampling, "shared": model.shared,
            "tasks": {k: {"task": cfg.tasks[k].task, **s.info} for k, s in parts.items()}}
    return Setup(model, first.tokenizer, task, train, dev, first.model_path, info)


def save_task_runs(s: Setup, cfg: MultiTaskRun, adapter: bool, run_dir: Path,
                   final: dict[str, Any]) -> Path:
    """Write every task as a sub-run that the single-task commands load."""
    for name, model in s.model.models.items():
        sub = run_dir / TASKS_DIR / name
        sub.mkdir(parents=True, exist_ok=True)
        sub_cfg = part_config(cfg, name, sub)
        (sub / "config.yaml").write_text(dump_config(sub_cfg), encoding="utf-8")
        if adapter:
            save_adapter(model, cfg.method, head_modules(model), str(s.model_path),
                         sub / ADAPTER_DIR, task=sub_cfg.task)
        else:
            model.save_pretrained(sub / MODEL_DIR)
            s.tokenizer.save_pretrained(sub / MODEL_DIR)
        write_json(sub / "run.json", {
            "base_model": str(s.model_path), "model_name": cfg.model.name,
            "method": cfg.method.name, "artifact": ADAPTER_DIR if adapter else MODEL_DIR,
            "max_length": cfg.model.max_length, **s.info["tasks"][name],
            "multitask_run": str(run_dir)})
        write_json(sub / "summary.json", {"task": sub_cfg.task, "metric": s.task.tasks[name].default_metric,
                                          "final_dev": task_scores(final, name)})
    return run_dir / TASKS_DIR


def task_scores(record: dict[str, Any], name: str) -> dict[str, Any]:
    """One task's part of a multitask evaluation record (`name/metric` keys)."""
    prefix = f"{name}/"
    return {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
