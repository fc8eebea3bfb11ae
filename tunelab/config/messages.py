"""Config error messages: a pydantic error turned into one line that names the dotted key as
the user wrote it (union tags dropped) and, for an unknown key, the closest valid one."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Annotated, Any, Union

from tunelab.methods.registry import METHODS
from tunelab.schema import StrictModel


def describe(err: dict[str, Any], root: Any, tasks: tuple[str, ...] = ()) -> str:
    """One line for one pydantic error, the key as the user wrote it; `root`: the config class
    (or discriminated union of classes) validated, `tasks`: its top-level tags, if a union."""
    raw_loc = tuple(err["loc"])
    loc = _walk(raw_loc, root)[0]
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    kind = err["type"]
    if not loc and kind == "value_error":  # a cross-field check: its message names the keys
        return err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        known = _fields_at(raw_loc, root)
        guess = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.5)
        hint = f" (did you mean '{'.'.join([*map(str, loc[:-1]), guess[0]])}'?)" if guess else ""
        return f"unknown key '{dotted}'{hint}; valid keys here: {', '.join(known)}"
    if kind == "union_tag_invalid":
        tag = err.get("ctx", {}).get("tag", "")
        if not loc:
            guess = difflib.get_close_matches(str(tag), tasks, n=1, cutoff=0.5)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            return f"task: unknown task '{tag}'{hint}; choose from: {', '.join(tasks)}"
        names = list(METHODS)
        guess = difflib.get_close_matches(str(tag), names, n=1, cutoff=0.5)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        return f"{dotted}.name: unknown method '{tag}'{hint}; choose from: {', '.join(names)}"
    if kind == "missing":
        return f"missing required key '{dotted}'"
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict) else ""
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:] if msg else msg
    return f"{dotted}: {msg.removeprefix('value error, ')}{shown}"


def _walk(loc: tuple[Any, ...], root: Any
          ) -> tuple[tuple[Any, ...], list[type[StrictModel]]]:
    """Follow a pydantic error location through the config classes.

    Returns the location as the user wrote it (union tags and type markers dropped) and the
    config classes that could hold the last key (one, once a method tag picked its class).
    """
    out: list[Any] = []
    cls: Any = root
    parent: list[type[StrictModel]] = models_in(root)[:1]  # a union: its first class
    for part in loc:
        if typing.get_origin(cls) is dict:  # user-named entries (a multitask run's tasks)
            out.append(part)
            cls = typing.get_args(cls)[1]
            continue
        if (typing.get_origin(cls) is list and isinstance(part, int)
                and models_in(typing.get_args(cls)[0])):  # an item of a list of sections
            out.append(part)
            cls = typing.get_args(cls)[0]
            continue
        options = models_in(cls)
        if not options:  # a leaf value: the rest are pydantic's type markers
            break
        if len(options) > 1:
            match = [o for o in options if _tag_of(o) == part]
            if match:
                cls = match[0]
                continue
        out.append(part)
        parent = options
        field = options[0].model_fields.get(str(part)) if len(options) == 1 else None
        cls = field.annotation if field is not None else None
    return tuple(out), parent


def _fields_at(loc: tuple[Any, ...], root: Any) -> list[str]:
    """Valid keys beside the last element of a (raw) error location."""
    models = _walk(loc, root)[1]
    return sorted({k for m in models for k in m.model_fields}) if len(models) > 1 else \
        list(models[0].model_fields)


def models_in(annotation: Any) -> list[type[StrictModel]]:
    """The StrictModel classes an annotation may hold (unwraps Optional, Union, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, StrictModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return models_in(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in models_in(a)]
    return []


def _tag_of(model: type[StrictModel]) -> Any:
    """The discriminator value of a config class: its `task` (runs) or `name` (methods)."""
    for key in ("task", "name"):
        field = model.model_fields.get(key)
        args = typing.get_args(field.annotation) if field is not None else ()
        if args:
            return args[0]
    return None
