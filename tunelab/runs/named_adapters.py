"""Choosing adapters on the command line: `--add-adapter [NAME=]PATH` loads another LoRA
adapter (a run directory or a PEFT adapter directory) beside a run's own, and
`--adapter NAME` picks the one in use (`base`: every adapter off, the exact base model).
Names default to the directory's name (a run's name for its adapter/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from tunelab.errors import AdapterError
from tunelab.methods.multi_adapter import load_named_adapter, set_adapter
from tunelab.methods.peft_format import CONFIG_FILE
from tunelab.runs.layout import ADAPTER_DIR, RUN_INFO, read_run_info
from tunelab.runs.trained import load_run_base, load_trained

BASE = "base"  # --adapter base: all adapters off
RESERVED = (BASE, "merged")


def source_adapter(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """(adapter directory, run info or None) for a run directory or an adapter directory."""
    if (path / RUN_INFO).is_file():
        info = read_run_info(path)
        if info["artifact"] != ADAPTER_DIR:
            raise AdapterError(f"{path}: a {info['method']} run saves a full model, not an "
                               "adapter; only LoRA adapters can be loaded side by side or combined")
        return path / ADAPTER_DIR, info
    if (path / CONFIG_FILE).is_file():
        return path, None
    raise AdapterError(f"{path}: neither a tunelab run directory ({RUN_INFO}) nor a PEFT adapter "
                       f"directory ({CONFIG_FILE})")


def split_named(text: str) -> tuple[str, str]:
    """`NAME=PATH` -> (NAME, PATH); a bare PATH (even one holding '=') -> ("", PATH)."""
    if "=" in text and not Path(text).exists():
        name, _, path = text.partition("=")
        return name, path
    return "", text


def adapter_name(path: Path, taken: set[str]) -> str:
    """The directory's name (its parent's for a run's adapter/), made unique."""
    path = path.resolve()
    stem = path.parent.name if path.name == ADAPTER_DIR else path.name
    name, k = stem, 2
    while name in taken or name in RESERVED:
        name, k = f"{stem}-{k}", k + 1
    return name


def attach(model: nn.Module, own: Path | None, extra: list[str], use: str | None) -> list[str]:
    """Load `own` (a run's directory) and each `[NAME=]PATH` of `extra` as named adapters,
    then activate `use` (default: the first loaded; `base`: none). Returns the names."""
    names: list[str] = []
    sources = ([str(own)] if own is not None else []) + list(extra)
    for text in sources:
        name, path = split_named(text)
        if name in RESERVED or name in names:
            raise AdapterError(f"--add-adapter {text}: the name {name!r} is "
                               f"{'reserved' if name in RESERVED else 'taken'}; pick another")
        name = name or adapter_name(Path(path), set(names))
        load_named_adapter(model, name, source_adapter(Path(path))[0])
        names.append(name)
    if use is not None:
        set_adapter(model, None if use == BASE else use)
    return names


def load_run(run_dir: Path, extra: list[str] | None = None, use: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """load_trained, or with other adapters beside the run's own (named after the run) and
    the one in use chosen."""
    if not extra and use is None:
        return load_trained(run_dir)
    model, tokenizer, info = load_run_base(run_dir)
    attach(model, run_dir if info["artifact"] == ADAPTER_DIR else None, extra or [], use)
    return model.eval(), tokenizer, info
