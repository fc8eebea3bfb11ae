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

from tunelab.config import RunConfig, validate
from tunelab.config.tree import read_yaml
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
    info = _read_json(path)
    for key in ("task", "artifact"):
        if not isinstance(info.get(key), str) or not info[key]:
            raise CheckpointError(f"{path}: '{key}' is missing or not a string; was the run "
                                  "directory edited?")
    if info["task"] == "multitask" and (not isinstance(info.get("tasks"), (list, dict))
                                        or not all(isinstance(t, str) for t in info["tasks"])):
        raise CheckpointError(f"{path}: 'tasks' must list the multitask run's task names")
    artifact = run_dir / info["artifact"]
    if not artifact.is_dir():
        raise CheckpointError(f"{run_dir}: the run has no {info['artifact']}/ yet; did training "
                              "finish? (resume it with `tunelab train CONFIG --resume`)")
    return info


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file the run wrote; damage is a CheckpointError naming the file."""
    try:
        raw = path.read_bytes()
        info = json.loads(raw.decode("utf-8-sig"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise CheckpointError(f"{path}:{line}: byte 0x{raw[exc.start]:02x} at offset "
                              f"{exc.start} is not valid utf-8; was the file damaged?") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); was the file "
                              "damaged?") from None
    except (RecursionError, ValueError) as exc:  # nested too deeply; a 5000-digit number
        raise CheckpointError(f"{path}: not valid JSON ({type(exc).__name__}); was the file "
                              "damaged?") from None
    if not isinstance(info, dict):
        raise CheckpointError(f"{path}: expected a JSON object; was the file damaged?")
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
    return validate(read_yaml(path), str(path))


# Files only tunelab writes at the top of an output directory: a run (train, meta), a
# cross-validation and a tune study. A directory holding none of them is never deleted.
OUTPUT_MARKERS = (RUN_INFO, "cv.json", "study.db", "meta.json", "continual.json")


def is_tunelab_output(path: Path) -> bool:
    """A directory --overwrite may delete: one that tunelab wrote (see OUTPUT_MARKERS)."""
    return path.is_dir() and not path.is_symlink() and any(
        (path / marker).is_file() for marker in OUTPUT_MARKERS)


def check_replaceable(out: Path, overwrite: bool, what: str, resumable: bool = False) -> None:
    """Refuse to mix outputs: a non-empty `out` is replaced only with --overwrite, and only when
    tunelab wrote it (never a home, project or data folder, whatever output_dir says)."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not is_tunelab_output(out):
        raise CheckpointError(f"output_dir {out} is not empty and is not a tunelab run (no "
                              f"{', '.join(OUTPUT_MARKERS)}); tunelab never deletes it, even "
                              "with --overwrite: set output_dir to a new or empty directory")
    if not overwrite:
        raise CheckpointError(f"output_dir {out} already holds a {what}; pass "
                              + ("--resume to continue it, " if resumable else "")
                              + "--overwrite to replace it, or set output_dir")
