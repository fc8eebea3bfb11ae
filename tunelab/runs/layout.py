"""A run directory: what it holds (loading a trained model back: tunelab.runs.trained).

    run_dir/config.yaml      the effective config          run_dir/run.json   labels, base, artifact
    run_dir/adapter/         adapter (PEFT layout)         run_dir/model/     full checkpoint (others)
    run_dir/metrics.jsonl    run_dir/plot.png              run_dir/summary.json
    run_dir/checkpoints/     resumable state               run_dir/best/      best trainable weights
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import yaml

from tunelab.config import RunConfig, validate
from tunelab.errors import CheckpointError
from tunelab.io import atomic_write

RUN_INFO = "run.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8"))


def read_run_info(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_INFO
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a tunelab run directory (no {RUN_INFO}); give the "
                              "output_dir of a `tunelab train` run")
    info = json.loads(path.read_text(encoding="utf-8"))
    artifact = run_dir / info["artifact"]
    if not artifact.is_dir():
        raise CheckpointError(f"{run_dir}: the run has no {info['artifact']}/ yet; did training "
                              "finish? (resume it with `tunelab train CONFIG --resume`)")
    return info


def task_runs(run_dir: Path, task: str | None) -> list[Path]:
    """The run directories `--task` picks: a multitask run's sub-run for that task (every
    task's when none is given); a single-task run itself."""
    info = read_run_info(run_dir)
    if info["task"] != "multitask":
        if task is not None:
            raise CheckpointError(f"--task {task}: {run_dir} is a {info['task']} run with one "
                                  "task; drop --task")
        return [run_dir]
    names = list(info["tasks"])
    if task is None:
        return [run_dir / "tasks" / n for n in names]
    if task not in names:
        guess = difflib.get_close_matches(task, names, n=1, cutoff=0.5)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        raise CheckpointError(f"--task: {run_dir} has no task '{task}'{hint}; its tasks: "
                              f"{', '.join(names)}")
    return [run_dir / "tasks" / task]


def load_run_config(run_dir: Path) -> RunConfig:
    """The run's config.yaml, validated as when it ran (the one way every command reads it)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no config.yaml; give the output_dir of a `tunelab "
                              "train` run (or was the run directory edited?)")
    return validate(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
