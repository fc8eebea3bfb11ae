"""What a report reads from a run directory, without loading any weights: the effective
config, run.json, summary.json, the metrics log, causal LM samples and test translations."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import CheckpointError
from tunelab.runs.layout import RUN_INFO


@dataclass
class RunFiles:
    dir: Path
    config: dict[str, Any]  # config.yaml as written by `tunelab train`
    info: dict[str, Any]  # run.json
    summary: dict[str, Any] | None  # summary.json; None while a run is unfinished
    history: list[dict[str, Any]]  # metrics.jsonl records, in order
    name: str = ""  # how pages call the run: the directory's name unless two runs share it

    def __post_init__(self) -> None:
        self.name = self.name or self.dir.resolve().name

    @property
    def task(self) -> str:
        return self.info["task"]

    @property
    def metric(self) -> str:
        """The selection metric: the summary's, else the config's, else the task default."""
        if self.summary and self.summary.get("metric"):
            return self.summary["metric"]
        chosen = (self.config.get("train") or {}).get("metric")
        return chosen or {"classification": "accuracy", "token_classification": "f1"}.get(
            self.task, "loss")

    def train_records(self) -> list[dict[str, Any]]:
        return [r for r in self.history if "train_loss" in r]

    def dev_records(self) -> list[dict[str, Any]]:
        return [r for r in self.history if r.get("split") == "dev"]

    def samples(self) -> dict[int, list[dict[str, Any]]]:
        """Causal LM generations per evaluation step (RUN/samples/step-N.jsonl)."""
        out = {}
        for path in sorted((self.dir / "samples").glob("step-*.jsonl")):
            out[int(path.stem.split("-")[1])] = _jsonl(path)
        return out

    def translations(self) -> list[dict[str, Any]]:
        path = self.dir / "test_translations.jsonl"
        return _jsonl(path) if path.is_file() else []


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}:{number}: not a JSON line ({exc.msg}); the file is "
                                  "damaged: remove that line or retrain") from None
    return rows


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_run(run_dir: Path) -> RunFiles:
    if not (run_dir / RUN_INFO).is_file():
        raise CheckpointError(f"{run_dir}: not a tunelab run directory (no {RUN_INFO}); give the "
                              "output_dir of a `tunelab train` run")
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir}: no config.yaml; was the run directory edited?")
    summary = run_dir / "summary.json"
    metrics = run_dir / "metrics.jsonl"
    return RunFiles(run_dir, yaml.safe_load(config_path.read_text(encoding="utf-8")) or {},
                    _json(run_dir / RUN_INFO), _json(summary) if summary.is_file() else None,
                    _jsonl(metrics) if metrics.is_file() else [])
