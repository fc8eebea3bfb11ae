"""model.name as every command reads it: a packaged model, a local directory, a hub id, or a
finished tunelab run (its model with the adapter merged, so runs chain)."""

from __future__ import annotations

from pathlib import Path

from tunelab.models.resolve import resolve as resolve_model
from tunelab.runs.trained import as_base


def resolve(name: str) -> Path:
    """A directory holding config.json and weights for `name`, or a ModelError saying what to do."""
    path = Path(name).expanduser()
    if (path / "run.json").is_file():  # a finished tunelab run: its model, merged
        return as_base(path)
    return resolve_model(name)
