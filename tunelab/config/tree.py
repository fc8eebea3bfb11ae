"""Config trees before validation: a YAML file read into dicts, and `dotted.key=value`
overrides applied to them. Every command that takes a config (train, tune, meta) reads it
this way; the schema that checks the result lives in tunelab.config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import ConfigError


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    """'a.b=3' -> (['a', 'b'], 3); values are parsed as YAML scalars/lists."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip() or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. train.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_override(tree: dict[str, Any], path: list[str], value: Any) -> None:
    """Set tree[a][b]... = value for path [a, b, ...], making missing sections."""
    node = tree
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            dotted = ".".join(path[: i + 1])
            raise ConfigError(f"override {'.'.join(path)}: {dotted} is a value, not a section")
        node = child
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (model, data, ...)")
    return data


def with_overrides(tree: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """`tree` with every `dotted.key=value` override applied, in place; returns it."""
    for keys, value in parse_overrides(overrides or []):
        apply_override(tree, keys, value)
    return tree
