"""Several named LoRA adapters on one base model: load, switch, disable, combine, save.

The model is not wrapped: each targeted Linear becomes a LoraLinear that holds every
adapter loaded for it (lora.py: the one in use in lora_A / lora_B, the others stashed), and
the task head, which each classification adapter carries as PEFT's modules_to_save, is
copied in from the active adapter's saved tensors. The bookkeeping (names, active adapter,
settings, heads) lives in a plain object on the model, `model.tunelab_adapters`.

    load_named_adapter(model, "sst2", "runs/sst2-lora/adapter")
    load_named_adapter(model, "imdb", "runs/imdb-lora/adapter")
    set_adapter(model, "imdb")
    with adapters_disabled(model): ...      # exactly the base model's outputs
    add_weighted_adapter(model, ["sst2", "imdb"], [0.5, 0.5], "both", CombineSpec("ties", 0.5))
    save_named_adapter(model, "both", "runs/both/adapter")
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from tunelab.errors import AdapterError, MethodError
from tunelab.methods import targets as tgt
from tunelab.methods.base import PEFT_PREFIX, AdapterLayer
from tunelab.methods.layer import AdaptedLinear, linear_shape, tensor_options
from tunelab.methods.lora import (
    LoraLinear,
    LoraMethod,
    LoraOptions,
    lora_layers,
    peft_lora_config,
)
from tunelab.methods.merging import CombineSpec, combine_factors
from tunelab.methods.multi_lora import LoraSlot, MultiLoraLinear, frozen_slot, stash
from tunelab.methods.peft_format import (
    method_config,
    read_adapter_config,
    weights_file,
    write_adapter,
)
from tunelab.models.heads import head_modules

ATTR = "tunelab_adapters"


@dataclass
class AdapterSet:
    """What is loaded on a model: adapter names in load order, the active one (None: all off),
    each adapter's adapter_config.json settings, and the head tensors of those that carry one."""

    names: list[str] = field(default_factory=list)
    active: str | None = None
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    heads: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    base_head: dict[str, torch.Tensor] = field(default_factory=dict)


def adapter_set(model: nn.Module) -> AdapterSet:
    """The model's AdapterSet, created on first use. A model that already holds one LoRA
    adapter (trained here, or loaded by load_adapter) starts with it as `default`, active."""
    found = model.__dict__.get(ATTR)
    if found is not None:
        return found
    aset = AdapterSet(base_head=_head_state(model))
    layers = lora_layers(model)
    if layers:
        layer = next(iter(layers.values()))
        aset.names, aset.active = [layer.adapter_name], layer.adapter_name
        aset.configs[layer.adapter_name] = {"r": layer.r, "lora_alpha": layer.alpha,
                                            "use_rslora": layer.scaling_rule == "rslora"}
        if aset.base_head:  # its head is whatever the model holds now
            aset.heads[layer.adapter_name] = aset.base_head
    model.__dict__[ATTR] = aset
    return aset


def adapter_names(model: nn.Module) -> list[str]:
    return list(adapter_set(model).names)


def active_adapter(model: nn.Module) -> str | None:
    return adapter_set(model).active


@dataclass
class LoraFile:
    """A PEFT LoRA adapter directory read and checked against a model: its settings, the
    (A, B) of each module it adapts, and the head tensors it carries."""

    config: dict[str, Any]
    options: LoraOptions
    weights: Path
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    head_state: dict[str, torch.Tensor]


def read_lora(model: nn.Module, name: str, adapter_dir: str | Path) -> LoraFile:
    """Read the LoRA adapter in `adapter_dir` (to be called `name`) for `model`; every key,
    target and shape is checked, nothing on the model changes."""
    config, method, path = read_adapter_config(adapter_dir)
    if method is not LoraMethod:
        kind = "DoRA" if config.get("use_dora") else str(config.get("peft_type"))
        raise AdapterError(f"{path}: adapter {name!r} is {kind}; only LoRA adapters can share a "
                           "model with other adapters (load it alone, or merge it into the base)")
    weights_path = weights_file(adapter_dir, path)
    cfg = method_config(config, LoraMethod, path)
    head = head_modules(model)
    try:
        modules = tgt.select(model, cfg.targets, head, (AdapterLayer,))
    except MethodError as exc:
        raise AdapterError(f"{path}: adapter {name!r}: {exc}") from None
    factors, head_state = _split_state(load_file(str(weights_path)), head, modules, name, weights_path)
    _check_head(model, head_state, name, weights_path)
    for m in modules:
        _check_factors(model.get_submodule(m), factors[m], cfg, name, weights_path, m)
    return LoraFile(config, cfg, weights_path, factors, head_state)


def load_named_adapter(model: nn.Module, name: str, adapter_dir: str | Path) -> list[str]:
    """Load a PEFT LoRA adapter directory under `name` beside those already loaded; returns
    the modules it adapts. The first adapter loaded becomes active; later ones wait for
    set_adapter. Everything is checked before the model changes."""
    aset = adapter_set(model)
    if name in aset.names:
        raise AdapterError(f"an adapter named {name!r} is already loaded ({', '.join(aset.names)}); "
                           "give this one another name")
    lf = read_lora(model, name, adapter_dir)
    config, cfg, head_state, modules = lf.config, lf.options, lf.head_state, list(lf.factors)
    for m in modules:
        layer = model.get_submodule(m)
        if isinstance(layer, AdapterLayer) and type(layer) not in (LoraLinear, MultiLoraLinear):
            raise AdapterError(f"{lf.weights}: adapter {name!r}: module {m} already carries a "
                               f"{type(layer).__name__}; only LoRA adapters can share a layer")
    slots = {m: _slot(model.get_submodule(m), lf.factors[m], cfg) for m in modules}
    for m, slot in slots.items():
        layer = model.get_submodule(m)
        slot.train(model.training)
        if isinstance(layer, LoraLinear):
            stash(layer, name, slot)
            continue
        new = LoraLinear(layer, slot.r, slot.alpha, 0.0, slot.scaling_rule)
        new.lora_A, new.lora_B, new.lora_dropout = slot.lora_A, slot.lora_B, slot.lora_dropout
        new.adapter_name = name
        new.train(model.training)
        tgt.replace_module(model, m, new)
    aset.names.append(name)
    aset.configs[name] = config
    if head_state:
        aset.heads[name] = head_state
    set_adapter(model, name if len(aset.names) == 1 else aset.active)
    return modules


def _split_state(state: dict[str, torch.Tensor], head: list[str], modules: list[str], name: str,
                 source: Path) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor]]:
    """({module: (A, B)}, {head parameter: tensor}); any other or missing key is an error."""
    plain = {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}
    head_state = {k: v for k, v in plain.items() if k.split(".", 1)[0] in head}
    expected = {f"{m}.lora_{x}.weight" for m in modules for x in "AB"}
    missing = sorted(expected - set(plain))
    unexpected = sorted(set(plain) - expected - set(head_state))
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:3])}"] if missing else []) + \
                ([f"keys that fit no LoRA layer: {', '.join(unexpected[:3])}"] if unexpected else [])
        raise AdapterError(f"{source}: adapter {name!r}: " + "; ".join(parts) +
                           "; was it trained on this base model?")
    return {m: (plain[f"{m}.lora_A.weight"], plain[f"{m}.lora_B.weight"]) for m in modules}, head_state


def _check_head(model: nn.Module, head_state: dict[str, torch.Tensor], name: str, source: Path) -> None:
    params = dict(model.named_parameters())
    for key, tensor in head_state.items():
        want = tuple(params[key].shape) if key in params else None
        if want != tuple(tensor.shape):
            raise AdapterError(f"{source}: adapter {name!r}: head tensor {key} has shape "
                               f"{tuple(tensor.shape)}, the model's is {want}; was it trained "
                               "with another label set?")


def _check_factors(layer: nn.Module, factors: tuple[torch.Tensor, torch.Tensor],
                   cfg: LoraOptions, name: str, source: Path, module: str) -> None:
    """A (r, in) and B (out, r) must fit the layer they adapt."""
    a, b = factors
    out_f, in_f = (layer.out_features, layer.in_features) if isinstance(layer, AdaptedLinear) \
        else linear_shape(layer)
    if a.shape != (cfg.r, in_f) or b.shape != (out_f, cfg.r):
        raise AdapterError(f"{source}: adapter {name!r}, module {module}: lora_A {tuple(a.shape)} "
                           f"and lora_B {tuple(b.shape)} do not fit the layer ({out_f} x {in_f}) "
                           f"at r={cfg.r}; was it trained on another base model?")


def _slot(layer: nn.Module, factors: tuple[torch.Tensor, torch.Tensor], cfg: LoraOptions) -> LoraSlot:
    """A frozen LoraSlot holding A and B (checked by read_lora)."""
    a, b = factors
    return frozen_slot(a, b, _like(layer), cfg.r, cfg.alpha, cfg.scaling, cfg.dropout)


def _like(layer: nn.Module) -> torch.Tensor:
    """An empty tensor on the layer's weight device and dtype (a quantized base's float dtype)."""
    return torch.empty(0, **tensor_options(layer))


def set_adapter(model: nn.Module, name: str | None) -> None:
    """Compute with adapter `name` (layers it does not adapt run as the base); None: all off,
    the exact base model (its head too, as it was before the first adapter was loaded)."""
    aset = adapter_set(model)
    if name is not None and name not in aset.names:
        raise AdapterError(f"no adapter named {name!r} is loaded (loaded: "
                           f"{', '.join(aset.names) or 'none'})")
    for layer in lora_layers(model).values():
        if name is None and hasattr(layer, "pissa_A0"):
            raise AdapterError("PiSSA changed this model's base weights; save and reload the "
                               "adapter (it is written against the original base) to disable it")
        layer.use_adapter(name)
    _copy_head(model, aset.heads.get(name, aset.base_head) if name is not None else aset.base_head)
    aset.active = name


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run the base model inside the block; the active adapter comes back after it."""
    before = adapter_set(model).active
    set_adapter(model, None)
    try:
        yield
    finally:
        set_adapter(model, before)


def _head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{h}.{n}": p.detach().clone() for h in head_modules(model)
            for n, p in model.get_submodule(h).named_parameters()}


@torch.no_grad()
def _copy_head(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for key, tensor in state.items():
        params[key].copy_(tensor)


# ------------------------------------------------------------------ combining and saving


def add_weighted_adapter(model: nn.Module, adapters: list[str], weights: list[float], name: str,
                         spec: CombineSpec, head_from: str | None = None) -> int:
    """Add adapter `name` combining `adapters` (peft's add_weighted_adapter; see merging.py).

    It covers every layer any input adapts; an input missing at a layer simply does not
    take part there. Heads cannot be combined: with several adapters carrying different
    heads, `head_from` names the one kept. Returns the new adapter's rank."""
    aset = adapter_set(model)
    if name in aset.names:
        raise AdapterError(f"an adapter named {name!r} is already loaded; pick a new name")
    missing = [a for a in adapters if a not in aset.names]
    if not adapters or missing:
        raise AdapterError(f"no adapter named {', '.join(map(repr, missing)) or '(none given)'} "
                           f"is loaded (loaded: {', '.join(aset.names) or 'none'})")
    if len(weights) != len(adapters):
        raise AdapterError(f"{len(adapters)} adapters but {len(weights)} weights; give one weight "
                           "per adapter")
    rank = spec.check({a: int(aset.configs[a]["r"]) for a in adapters})
    head = _combined_head(aset, adapters, head_from)
    layers = lora_layers(model)
    like = _like(next(iter(layers.values())))
    generator = torch.Generator(device=like.device).manual_seed(spec.seed)
    with torch.no_grad():
        for layer in layers.values():
            present = [(layer.factors(a), w) for a, w in zip(adapters, weights)]
            present = [(f, w) for f, w in present if f is not None]
            if not present:
                continue
            a, b = combine_factors([f for f, _ in present], [w for _, w in present], spec, rank,
                                   generator)
            slot = frozen_slot(a, b, _like(layer), rank, float(rank), "standard", 0.0)
            stash(layer, name, slot.train(model.training))
    first = aset.configs[adapters[0]]
    aset.names.append(name)
    aset.configs[name] = {**first, "r": rank, "lora_alpha": rank, "use_rslora": False,
                          "lora_dropout": 0.0}
    if head:
        aset.heads[name] = head
    return rank


def _combined_head(aset: AdapterSet, adapters: list[str], head_from: str | None) -> dict[str, torch.Tensor]:
    if head_from is not None:
        if head_from not in aset.heads:
            raise AdapterError(f"head_from: adapter {head_from!r} carries no head (adapters with "
                               f"one: {', '.join(a for a in aset.names if a in aset.heads) or 'none'})")
        return aset.heads[head_from]
    carriers = [a for a in adapters if a in aset.heads]
    first = aset.heads[carriers[0]] if carriers else {}
    for other in carriers[1:]:
        if any(not torch.equal(first[k], aset.heads[other][k]) for k in first):
            raise AdapterError(f"adapters {', '.join(carriers)} each carry their own task head, "
                               "and heads cannot be combined; choose the one to keep (--head NAME)")
    return first


def named_adapter_tensors(model: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """PEFT-named tensors of adapter `name`: its A and B per layer, then its head."""
    out: dict[str, torch.Tensor] = {}
    for module, layer in lora_layers(model).items():
        found = layer.factors(name)
        if found is not None:
            out[f"{PEFT_PREFIX}{module}.lora_A.weight"] = found[0]
            out[f"{PEFT_PREFIX}{module}.lora_B.weight"] = found[1]
    for key, tensor in adapter_set(model).heads.get(name, {}).items():
        out[PEFT_PREFIX + key] = tensor
    return {k: v.detach().contiguous().cpu() for k, v in out.items()}


def save_named_adapter(model: nn.Module, name: str, out_dir: str | Path,
                       base_model: str | None = None, task_type: str | None = None) -> Path:
    """Write adapter `name` as a PEFT LoRA adapter directory (peft and tunelab load it)."""
    aset = adapter_set(model)
    if name not in aset.names:
        raise AdapterError(f"no adapter named {name!r} is loaded (loaded: {', '.join(aset.names)})")
    src = aset.configs[name]
    layers = {m: layer for m, layer in lora_layers(model).items() if name in layer.adapter_names()}
    head = head_modules(model) if name in aset.heads else []
    config: dict[str, Any] = {
        "peft_type": "LORA", "task_type": task_type or src.get("task_type"),
        "base_model_name_or_path": base_model or src.get("base_model_name_or_path"),
        **peft_lora_config(model, head_modules(model), layers, int(src["r"]),  # type: ignore[arg-type]
                           float(src["lora_alpha"]), float(src.get("lora_dropout", 0.0)),
                           bool(src.get("use_rslora")), False),
        "modules_to_save": head or None, "inference_mode": True, "revision": None,
    }
    return write_adapter(Path(out_dir), config, named_adapter_tensors(model, name))
