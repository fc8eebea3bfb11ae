"""Loading a run config: YAML (or a base tree), overrides, one validation, one ConfigError."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import yaml
from pydantic import TypeAdapter, ValidationError

from tunelab.config.messages import describe
from tunelab.config.run import RUN_CONFIG, SEARCH_KEY, TASKS, RunConfig
from tunelab.config.switch import apply_overrides
from tunelab.config.tree import read_yaml
from tunelab.errors import ConfigError

__all__ = ["load_config", "validate", "dump_config", "note_to_stderr"]

_ADAPTER = TypeAdapter(RUN_CONFIG)


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None,
                log: Callable[[str], None] | None = None) -> RunConfig:
    """Read YAML (or start from `base`), apply overrides, validate; raise ConfigError once.

    An override that switches `method.name` or `task` away from the file's drops the file's
    keys the new method or task lacks; each such switch is one note, passed to `log`
    (default: printed to stderr, so it reaches the user before any error)."""
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        tree = read_yaml(path)
    tree.pop(SEARCH_KEY, None)  # `tunelab tune` reads it; every other command runs the config as is
    source = str(path) if path else "config"
    for note in apply_overrides(tree, overrides, source):
        (log or note_to_stderr)(note)
    return validate(tree, source=source)


def note_to_stderr(line: str) -> None:
    """How a config note reaches the user when the caller passes no log: before any error."""
    print(f"note: {line}", file=sys.stderr)


def validate(tree: dict[str, Any], source: str = "config") -> RunConfig:
    if isinstance(tree, dict) and "task" not in tree:
        tree = {"task": "classification", **tree}
    try:
        return _ADAPTER.validate_python(tree)
    except ValidationError as exc:
        lines = [describe(err, RUN_CONFIG, TASKS) for err in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(dict.fromkeys(lines))) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
