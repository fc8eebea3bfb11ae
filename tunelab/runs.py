"""A run directory: what it holds, and loading a trained model back from it.

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

from tunelab.atomic import atomic_write
from tunelab.errors import CheckpointError
from tunelab.methods import head_modules
from tunelab.methods.peft_format import load_adapter
from tunelab.models import (load_causal_lm, load_classifier, load_seq2seq, load_token_classifier,
                            load_tokenizer, resolve)

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


def base_of(info: dict[str, Any]) -> Path:
    """The run's base model directory. A run that started from another run (`chain`) has that
    run's as_base/ as its base; if it was deleted, it is rebuilt from the run it came from."""
    chain = info.get("chain")
    if chain and not Path(info["base_model"]).is_dir():
        return resolve(chain[-1]["run"])
    return resolve(info["base_model"])


def load_trained(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, run info) of a finished run, in eval mode."""
    model, tokenizer, info = load_run_base(run_dir)
    if info["artifact"] != MODEL_DIR:
        load_adapter(model, run_dir / ADAPTER_DIR, head_modules(model))
    model.eval()  # the adapter's new layers too
    return model, tokenizer, info


def load_run_base(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, run info): the run's task model in eval mode, without its adapter
    (a full fine-tuning run's own weights)."""
    info = read_run_info(run_dir)
    base = base_of(info)
    tokenizer = load_tokenizer(base)
    full = run_dir / MODEL_DIR if info["artifact"] == MODEL_DIR else None
    if info.get("route", info["task"]) == "causal_lm":  # translation runs have a route
        model = load_causal_lm(base, weights_from=full)
    elif info["task"] == "masked_lm":
        from tunelab.models.mlm import load_masked_lm

        model = load_masked_lm(base, weights_from=full)[0]
    elif info.get("route") == "seq2seq":
        model = load_seq2seq(base, weights_from=full)
    else:
        load = load_token_classifier if info["task"] == "token_classification" else load_classifier
        model = load(base, info["labels"], weights_from=full, pad_token_id=tokenizer.pad_token_id)
    model.eval()
    return model, tokenizer, info
