"""model.name as every command reads it: a packaged model, a local directory, a hub id, or a
finished tunelab run (its model with the adapter merged, so runs chain); with
model.keep_layers, the smaller model made from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.models.resolve import resolve as resolve_model
from tunelab.models.student import student_base
from tunelab.runs.trained import as_base


def resolve(name: str) -> Path:
    """A directory holding config.json and weights for `name`, or a ModelError saying what to do."""
    path = Path(name).expanduser()
    if (path / "run.json").is_file():  # a finished tunelab run: its model, merged
        return as_base(path)
    return resolve_model(name)


def resolve_config(model: Any) -> Path:
    """The base directory a config's model: section names (a ModelConfig): model.name,
    made smaller when model.keep_layers is set."""
    path = resolve(model.name)
    return path if model.keep_layers is None else student_base(path, model.keep_layers)
