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
        except (yaml.YAMLError, ValueError, RecursionError):  # e.g. a date like 2024-02-30
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one,
    so a second `train:` section would silently replace the first)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class says so, with its line
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{p}:{line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} is "
                          "not valid utf-8; re-save the config file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except RecursionError:
        raise ConfigError(f"{p}: nested too deeply to read") from None
    except ValueError as exc:  # a value YAML resolves but Python cannot hold (2024-02-30)
        raise ConfigError(f"{p}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections (model, data, ...)")
    return data
