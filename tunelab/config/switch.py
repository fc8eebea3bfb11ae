"""Overrides that switch method or task: the file's keys the new one lacks are dropped, with a note.

`tunelab train examples/sst2-lora.yaml method.name=full` would otherwise fail on the file's
LoRA keys (r, alpha, targets), naming keys the user never typed.
"""

from __future__ import annotations

import copy
from typing import Any

from tunelab.config.messages import models_in
from tunelab.config.run import RUN_TYPES
from tunelab.config.tree import apply_override, parse_overrides
from tunelab.methods.registry import METHODS

__all__ = ["apply_overrides"]


def apply_overrides(tree: dict[str, Any], overrides: list[str] | None,
                    source: str = "config") -> list[str]:
    """Apply `dotted.key=value` overrides to `tree` in place; returns the notes of switches.

    When an override sets `task` or `method.name` to another value than the file's, the
    file's keys that the old task or method has and the new one lacks are dropped (lora ->
    full drops r, alpha, targets; lora -> dora keeps them). Keys given on the command line
    are never dropped (a key the new method lacks stays an error), nor are keys the old
    task or method does not know either (a typo stays an error)."""
    parsed = parse_overrides(overrides or [])
    given = [tuple(keys) for keys, _ in parsed]
    before = copy.deepcopy(tree)
    for keys, value in parsed:
        apply_override(tree, keys, value)
    notes = []
    for switch in (_switch_task, _switch_method):
        note = switch(before, tree, given, source)
        if note:
            notes.append(note)
    return notes


def _on_command_line(path: tuple[str, ...], given: list[tuple[str, ...]]) -> bool:
    """Whether an override set this key, a key inside it, or the section holding it."""
    return any(g[:len(path)] == path or path[:len(g)] == g for g in given)


def _drop(tree: dict[str, Any], path: tuple[str, ...], given: list[tuple[str, ...]],
          dropped: list[str]) -> None:
    """Remove the file's key at `path` from `tree` unless the command line set it."""
    if _on_command_line(path, given):
        return
    node = tree
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node:
        del node[path[-1]]
        dropped.append(".".join(path))


def _switch_note(key: str, new: Any, old: str, source: str, dropped: list[str]) -> str | None:
    if not dropped:
        return None
    return (f"{key}={new} (command line) replaces {old} from {source}: dropped "
            + ", ".join(dropped))


def _switch_method(before: dict[str, Any], tree: dict[str, Any], given: list[tuple[str, ...]],
                   source: str) -> str | None:
    file_method = before.get("method")
    if ("method", "name") not in given or not isinstance(file_method, dict) \
            or not isinstance(tree.get("method"), dict):
        return None
    old, new = file_method.get("name", "lora"), tree["method"].get("name")
    if not (isinstance(old, str) and isinstance(new, str)) or old == new \
            or old not in METHODS or new not in METHODS:
        return None
    old_keys = METHODS[old].config_cls.model_fields
    new_keys = METHODS[new].config_cls.model_fields
    dropped: list[str] = []
    for key in file_method:
        if key in old_keys and key not in new_keys:
            _drop(tree, ("method", key), given, dropped)
    return _switch_note("method.name", new, old, source, dropped)


def _switch_task(before: dict[str, Any], tree: dict[str, Any], given: list[tuple[str, ...]],
                 source: str) -> str | None:
    if ("task",) not in given:
        return None
    types = {t.model_fields["task"].default: t for t in RUN_TYPES}
    old, new = before.get("task", "classification"), tree.get("task")
    if not (isinstance(old, str) and isinstance(new, str)) or old == new \
            or old not in types or new not in types:
        return None
    old_cls, new_cls = types[old], types[new]
    dropped: list[str] = []
    for key, value in before.items():
        if key == "task" or key not in old_cls.model_fields:
            continue
        if key not in new_cls.model_fields:
            _drop(tree, (key,), given, dropped)
            continue
        old_models = models_in(old_cls.model_fields[key].annotation)
        new_models = models_in(new_cls.model_fields[key].annotation)
        if not isinstance(value, dict) or len(old_models) != 1 or len(new_models) != 1 \
                or old_models == new_models:
            continue  # a value, a union (the method: its own switch), or the same section
        for sub in value:
            if sub in old_models[0].model_fields and sub not in new_models[0].model_fields:
                _drop(tree, (key, sub), given, dropped)
    return _switch_note("task", new, old, source, dropped)
