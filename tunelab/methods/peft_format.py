"""Adapters in the Hugging Face PEFT layout: adapter_config.json + adapter_model.safetensors.

Key names and config keys are PEFT's, so `peft.PeftModel.from_pretrained` loads what we
write and we load what peft writes. Only LoRA-family adapters (LoRA, rsLoRA, DoRA) so far.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.atomic import atomic_write
from tunelab.errors import AdapterError
from tunelab.methods import targets as tgt
from tunelab.methods.base import ApplyReport
from tunelab.methods.dora import DoraConfig, DoraLinear, DoraMethod
from tunelab.methods.lora import LoraConfig, LoraLinear, LoraMethod, lora_layers

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
TASK_TYPES = {"classification": "SEQ_CLS", "causal_lm": "CAUSAL_LM",
              "token_classification": "TOKEN_CLS"}
# PEFT config keys we cannot honour yet, with the value that means "not used".
_UNSUPPORTED = {"rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None,
                "exclude_modules": None, "lora_bias": False,
                "bias": "none", "use_dora": None}


def adapter_tensors(model: nn.Module, head: list[str]) -> tuple[dict[str, torch.Tensor], int, float]:
    """PEFT-named tensors, plus the (r, alpha factor) to write: PiSSA becomes a plain LoRA delta
    of rank 2r against the original base weight, as PEFT does on save."""
    out: dict[str, torch.Tensor] = {}
    rank_factor, alpha_factor = 1, 1.0
    for name, layer in lora_layers(model).items():
        a, b = layer.lora_A.weight, layer.lora_B.weight
        if hasattr(layer, "pissa_A0"):
            a = torch.cat([a, layer.pissa_A0], dim=0)  # (2r, in)
            b = torch.cat([b, -layer.pissa_B0], dim=1)  # (out, 2r)
            rank_factor = 2
            alpha_factor = math.sqrt(2) if layer.scaling_rule == "rslora" else 2.0
        out[f"{PREFIX}{name}.lora_A.weight"] = a
        out[f"{PREFIX}{name}.lora_B.weight"] = b
        if isinstance(layer, DoraLinear):
            out[f"{PREFIX}{name}.lora_magnitude_vector"] = layer.lora_magnitude_vector
    for h in head:
        for pname, p in model.get_submodule(h).named_parameters():
            out[f"{PREFIX}{h}.{pname}"] = p
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}, rank_factor, alpha_factor


def save_adapter(model: nn.Module, cfg: LoraConfig, head: list[str], base_model: str,
                 out_dir: str | Path, task: str = "classification") -> Path:
    """Write the adapter atomically (temp files, then rename) and return its directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors, rank_factor, alpha_factor = adapter_tensors(model, head)
    chosen = list(lora_layers(model))
    config: dict[str, Any] = {
        "peft_type": "LORA", "task_type": TASK_TYPES[task], "base_model_name_or_path": base_model,
        "r": cfg.r * rank_factor, "lora_alpha": cfg.alpha * alpha_factor,
        "lora_dropout": cfg.dropout,
        "target_modules": tgt.compact(chosen, tgt.linear_names(model, head, (LoraLinear,))),
        "modules_to_save": head or None, "use_rslora": cfg.scaling == "rslora",
        "use_dora": isinstance(cfg, DoraConfig), "init_lora_weights": True, "bias": "none",
        "fan_in_fan_out": any(layer.fan_in_fan_out for layer in lora_layers(model).values()),
        "inference_mode": True, "rank_pattern": {}, "alpha_pattern": {},
        "layers_to_transform": None, "layers_pattern": None, "revision": None,
    }
    atomic_write(out / WEIGHTS_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    atomic_write(out / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    return out


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / CONFIG_FILE
    if not path.is_file():
        raise AdapterError(f"{adapter_dir}: no {CONFIG_FILE}; is this a PEFT adapter directory?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: peft_type {config.get('peft_type')!r} is not supported "
                           "(tunelab loads LORA adapters, including DoRA and rsLoRA)")
    for key, neutral in _UNSUPPORTED.items():
        value = config.get(key, neutral)
        if key == "use_dora" or value in (neutral, None, {}, "none", False):
            continue
        raise AdapterError(f"{path}: {key}={value!r} is not supported by tunelab yet")
    return config


def load_adapter(model: nn.Module, adapter_dir: str | Path, head: list[str]) -> ApplyReport:
    """Inject the LoRA layers an adapter describes into `model`, then load its weights."""
    config = read_adapter_config(adapter_dir)
    weights_path = Path(adapter_dir) / WEIGHTS_FILE
    if not weights_path.is_file():
        raise AdapterError(f"{adapter_dir}: no {WEIGHTS_FILE} next to {CONFIG_FILE}")
    method = DoraMethod if config.get("use_dora") else LoraMethod
    cfg = method.config_cls(r=config["r"], alpha=config["lora_alpha"],
                            dropout=config.get("lora_dropout", 0.0),
                            targets=config["target_modules"],
                            scaling="rslora" if config.get("use_rslora") else "standard")
    report = method.apply(model, cfg, head)
    state = load_file(str(weights_path))
    _load_state(model, state, weights_path, head)
    return report


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path,
                head: list[str]) -> None:
    params = dict(model.named_parameters())
    expected = {k for k in params if ".lora_" in k or k.split(".", 1)[0] in head}
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
    """Replace every LoRA/DoRA layer by its merged nn.Linear; returns how many were merged."""
    layers = lora_layers(model)
    for name, layer in layers.items():
        tgt.replace_module(model, name, layer.merged())
    return len(layers)


__all__ = ["save_adapter", "load_adapter", "read_adapter_config", "merge", "LoraLinear"]
