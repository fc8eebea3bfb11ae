"""Adapters in the Hugging Face PEFT layout: adapter_config.json + adapter_model.safetensors.

Key names and config keys are PEFT's, so `peft.PeftModel.from_pretrained` loads what we
write and we load what peft writes. This file does the shared part (files, the head saved
as modules_to_save, loading by name, merging); each adapter method supplies its own config
keys and tensors through the AdapterMethod hooks (LoRA's live in lora.py, IA3's in ia3.py...).
Methods peft does not have (bottleneck adapters) use the same layout under their own config
file name, so peft never mistakes them for its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.errors import AdapterError
from tunelab.io import DiskFullError, atomic_dir, atomic_write, fault_point
from tunelab.methods import targets as tgt
from tunelab.methods.base import (
    PEFT_PREFIX,
    AdapterMethod,
    ApplyReport,
    C,
    adapter_layers,
    owned_parameters,
)
from tunelab.methods.lora import LoraLinear
from tunelab.methods.registry import METHODS
from tunelab.methods.virtual import VirtualTokens
from tunelab.models.quantize import dequantize_model
from tunelab.schema import StrictModel

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = PEFT_PREFIX
TASK_TYPES = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM",
              "token_classification": "TOKEN_CLS",
              "masked_lm": None,  # peft has no masked-LM task type: a plain PeftModel
              "image_classification": None}  # nor an image one
# PEFT config keys we cannot honour yet, with the value that means "not used".
_UNSUPPORTED = {"rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None,
                "exclude_modules": None, "lora_bias": False,
                "bias": "none", "use_dora": None}


def adapter_methods() -> list[type[AdapterMethod[Any]]]:
    return [m for m in METHODS.values() if issubclass(m, AdapterMethod)]


def _method_of(cfg: StrictModel) -> type[AdapterMethod[Any]]:
    method = METHODS[cfg.name]  # type: ignore[attr-defined]
    if not issubclass(method, AdapterMethod):
        raise AdapterError(f"method {method.name} saves a full model, not an adapter")
    return method


def adapter_tensors(model: nn.Module, cfg: StrictModel, head: list[str]) -> dict[str, torch.Tensor]:
    """Every tensor the adapter file holds: the method's, then the head's (as modules_to_save)."""
    method = _method_of(cfg)
    out = dict(method.adapter_tensors(model, head))
    for h in head:
        for pname, p in owned_parameters(model, h):
            out[f"{method.head_prefix}{h}.{pname}"] = p
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def save_adapter(model: nn.Module, cfg: StrictModel, head: list[str], base_model: str,
                 out_dir: str | Path, task: str = "classification") -> Path:
    """Write the adapter atomically (temp files, then rename) and return its directory."""
    method = _method_of(cfg)
    out = Path(out_dir)
    tensors = adapter_tensors(model, cfg, head)
    config: dict[str, Any] = {
        "peft_type": method.peft_type, "task_type": TASK_TYPES[task],
        "base_model_name_or_path": base_model, **method.adapter_config(model, cfg, head),
        "modules_to_save": head or None, "inference_mode": True, "revision": None,
    }
    return write_adapter(out, config, tensors, method.config_file)


# files an adapter directory may hold besides its config: replacing such a directory as a
# whole loses nothing (tunelab_merge.json: `tunelab merge` writes it after the adapter)
_ADAPTER_FILES = {WEIGHTS_FILE, "README.md", "tunelab_merge.json"}


def write_adapter(out: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor],
                  config_file: str = CONFIG_FILE) -> Path:
    """Write an adapter's weights and settings atomically: a new (or adapter-only) directory
    is filled under a temp name, fsynced and renamed into place, so weights and config are
    always of one save; into a directory that holds other files, each file is replaced
    atomically (weights first). A full disk is an AdapterError naming the file."""
    known = _ADAPTER_FILES | {m.config_file for m in adapter_methods()} | {config_file}
    whole = not out.exists() or {p.name for p in out.iterdir()} <= known

    def weights(p: Path) -> None:
        save_file(tensors, str(p), metadata={"format": "pt"})

    def settings(p: Path) -> None:
        p.write_text(json.dumps(config, indent=2) + "\n")

    try:
        if whole:
            out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_dir(out) as tmp:
                weights(tmp / WEIGHTS_FILE)
                fault_point("adapter:half")  # weights written, config not yet
                settings(tmp / config_file)
        else:
            atomic_write(out / WEIGHTS_FILE, weights)
            fault_point("adapter:half")
            atomic_write(out / config_file, settings)
    except DiskFullError as exc:
        raise AdapterError(str(exc)) from None
    return out


def read_adapter_config(adapter_dir: str | Path) -> tuple[dict[str, Any], type[AdapterMethod[Any]], Path]:
    """(the config, the method that reads it, the config file's path)."""
    files = [CONFIG_FILE] + sorted({m.config_file for m in adapter_methods()} - {CONFIG_FILE})
    path = next((Path(adapter_dir) / f for f in files if (Path(adapter_dir) / f).is_file()), None)
    if path is None:
        raise AdapterError(f"{adapter_dir}: no {CONFIG_FILE}; is this a PEFT adapter directory?")
    config = _read_json(path)
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object of adapter settings")
    method = next((m for m in adapter_methods()
                   if m.config_file == path.name and m.reads(config)), None)
    if method is None:
        known = sorted({m.peft_type for m in adapter_methods() if m.config_file == CONFIG_FILE})
        raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r} is not supported "
                           f"(tunelab loads {', '.join(known)} adapters)")
    return config, method, path


def _read_json(path: Path) -> Any:
    """A JSON file of adapter settings; damage is an AdapterError naming the file (and line)."""
    try:
        raw = path.read_bytes()
        return json.loads(raw.decode("utf-8-sig"))
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise AdapterError(f"{path}:{line}: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                           "is not valid utf-8 (adapter configs are UTF-8 JSON)") from None
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (RecursionError, ValueError) as exc:  # nested too deeply; a 5000-digit number
        raise AdapterError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an adapter's safetensors file; a damaged file (truncated, a bad header)
    is an AdapterError naming it."""
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise AdapterError(f"{path}: not a readable safetensors file ({exc}); was it "
                           "truncated or damaged?") from None
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_adapter(model: nn.Module, adapter_dir: str | Path, head: list[str]) -> ApplyReport:
    """Inject the layers an adapter describes into `model`, then load its weights."""
    config, method, path = read_adapter_config(adapter_dir)
    weights_path = weights_file(adapter_dir, path)
    cfg = method_config(config, method, path)
    report = METHODS[cfg.name].apply(model, cfg, head)  # p_tuning's adapter loads as prompt_tuning
    state = method.take_extra_tensors(model, read_weights(weights_path), str(weights_path))
    _load_state(model, state, weights_path)
    return report


def weights_file(adapter_dir: str | Path, config_path: Path) -> Path:
    path = Path(adapter_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterError(f"{adapter_dir}: no {WEIGHTS_FILE} next to {config_path.name}")
    return path


def method_config(config: dict[str, Any], method: type[AdapterMethod[C]], path: Path) -> C:
    """The tunelab method config an adapter config describes; bad values name the file and key."""
    try:
        return method.config_from_adapter(config, str(path))
    except (TypeError, AttributeError, KeyError) as exc:  # a key of the wrong JSON type
        raise AdapterError(f"{path}: a setting has the wrong type for the {method.name} adapter "
                           f"({type(exc).__name__}: {exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"][:1].lower() + err["msg"][1:]
        raise AdapterError(f"{path}: {where}: {msg} (got {err.get('input')!r})") from None


def init_from_adapter(model: nn.Module, adapter_dir: str | Path, method_name: str) -> None:
    """Copy a saved adapter's weights into the layers this run's method already injected."""
    _, method, path = read_adapter_config(adapter_dir)
    if method.name != method_name:
        raise AdapterError(f"model.init_adapter: {path} holds a {method.name} adapter but "
                           f"method.name is {method_name}; use the adapter's method and settings")
    weights_path = weights_file(adapter_dir, path)
    state = method.take_extra_tensors(model, read_weights(weights_path), str(weights_path))
    _load_state(model, state, weights_path)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Copy tensors into the parameters they name; every trainable parameter must get one."""
    params = dict(model.named_parameters())
    expected = {k for k, p in params.items() if p.requires_grad}
    seen: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for key, tensor in state.items():
            name = key.removeprefix(PREFIX)
            if name not in params:
                unexpected.append(key)
                continue
            if params[name].shape != tensor.shape:
                raise AdapterError(f"{source}: {key} has shape {tuple(tensor.shape)}, the model "
                                   f"expects {tuple(params[name].shape)}; wrong base model or r?")
            params[name].copy_(tensor)
            seen.add(name)
    missing = sorted(expected - seen)
    if unexpected or missing:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} keys fit no parameter (e.g. {', '.join(unexpected[:3])})")
        raise AdapterError(f"{source}: " + "; ".join(parts) + "; was it trained on this base model?")


def merge(model: nn.Module) -> int:
    """Replace every adapter layer by its merged base layer; returns how many were merged."""
    if any(isinstance(m, VirtualTokens) for m in model.modules()):
        raise AdapterError("prompt methods add virtual tokens, not weight changes, so there is "
                           "nothing to merge into the base weights; load the run with its adapter")
    layers = adapter_layers(model)
    kept = sorted({type(m).__name__ for m in layers.values() if not m.mergeable})
    if kept:
        raise AdapterError(f"{', '.join(kept)} layers add a non-linear block and cannot be merged "
                           "into the base weights; load the run with its adapter instead")
    for name, layer in layers.items():
        tgt.replace_module(model, name, layer.merged())
    dequantize_model(model)  # model.quantize's untargeted layers: plain nn.Linear again
    return len(layers)


__all__ = ["save_adapter", "load_adapter", "read_adapter_config", "merge", "LoraLinear"]
