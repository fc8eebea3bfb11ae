"""Choosing which nn.Linear layers a method replaces (names, suffixes, a regex, all-linear),
and `inject`, the one place a layer-replacing method selects, freezes and replaces."""

from __future__ import annotations

import difflib
import re
from typing import Callable

from torch import nn

from tunelab.errors import MethodError
from tunelab.methods.base import ApplyReport, freeze_all, name_matches, report, unfreeze
from tunelab.models.quantize import QuantizedLinear

# (module name, the layer it replaces) -> its replacement
LayerFactory = Callable[[str, nn.Module], nn.Module]

ALL_LINEAR = "all-linear"
AUTO = "auto"  # the method's defaults for the model type (peft's table for that method)


def linear_types() -> tuple[type[nn.Module], ...]:
    """nn.Linear, and transformers' Conv1D (GPT-2's linear layers, weight stored as (in, out))."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover
        return (nn.Linear, QuantizedLinear)
    return (nn.Linear, Conv1D, QuantizedLinear)  # model.quantize's layers count as the Linear


def linear_names(model: nn.Module, exclude: list[str],
                 adapted: tuple[type[nn.Module], ...] = (),
                 extra: tuple[type[nn.Module], ...] = ()) -> list[str]:
    """Every linear layer in the model (and layer of an `extra` type: LoRA's nn.Conv2d),
    minus those inside the excluded modules (the head).

    Layers of an `adapted` type (e.g. LoraLinear) count as the Linear they replaced; the
    Linear modules inside them (lora_A, lora_B) do not count.
    """
    out: list[str] = []
    inside: str | None = None
    for name, module in model.named_modules():
        if inside is not None and name.startswith(inside + "."):
            continue
        if any(name == e or name.startswith(e + ".") for e in exclude):
            continue
        if isinstance(module, adapted):
            inside = name
            out.append(name)
        elif isinstance(module, linear_types() + extra):
            out.append(name)
    return out


def select(model: nn.Module, targets: list[str] | str, exclude: list[str],
           adapted: tuple[type[nn.Module], ...] = (),
           extra: tuple[type[nn.Module], ...] = ()) -> list[str]:
    """Names of the Linear layers that `targets` picks; raises MethodError when none match.

    A list holds module names or dotted suffixes (PEFT semantics); a string other than
    'all-linear' is a regex matched against the full module name. Layers of an `adapted`
    type count as the Linear they replaced (see linear_names); `extra` types (nn.Conv2d) are
    picked by name or regex, never by 'all-linear'.
    """
    candidates = linear_names(model, exclude, adapted, extra)
    if targets == ALL_LINEAR:  # as in PEFT: every Linear but the output (vocabulary) layer
        out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        chosen = [n for n in candidates if model.get_submodule(n) is not out_layer
                  and not isinstance(model.get_submodule(n), extra)]
    elif isinstance(targets, str):
        pattern = re.compile(targets)
        chosen = [n for n in candidates if pattern.fullmatch(n)]
    else:
        chosen = [n for n in candidates if any(name_matches(n, t) for t in targets)]
    if not chosen:  # the extra types are named only where the model has such layers
        kinds = {type(model.get_submodule(n)) for n in candidates}
        raise MethodError(no_match_message(targets, candidates, "Linear" + "".join(
            f" or {t.__name__}" for t in extra if any(issubclass(k, t) for k in kinds))))
    return chosen


def no_match_message(targets: list[str] | str, candidates: list[str], what: str = "Linear") -> str:
    wanted = targets if isinstance(targets, str) else ", ".join(targets)
    short = sorted({n.rsplit(".", 1)[-1] for n in candidates})
    probes = [targets] if isinstance(targets, str) else list(targets)
    close: list[str] = []
    for probe in probes:
        close += difflib.get_close_matches(probe.rsplit(".", 1)[-1], short, n=3, cutoff=0.4)
    close = list(dict.fromkeys(close)) or short[:5]
    if isinstance(targets, str) and targets in short:
        return (f"method.targets: the string '{targets}' is a regex over full module names and "
                f"matches none; to pick layers named {targets}, write targets: [{targets}]")
    return (f"method.targets: no {what} layer matches '{wanted}'; closest {what} names: "
            f"{', '.join(close)} (all {what} names: {', '.join(short)}; or use 'all-linear')")


def compact(chosen: list[str], candidates: list[str]) -> list[str]:
    """The shortest target list that picks exactly `chosen`: last-name suffixes if they do,
    else the full names. Written to adapter_config.json as target_modules."""
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in chosen})
    if [n for n in candidates if any(name_matches(n, s) for s in suffixes)] == chosen:
        return suffixes
    return list(chosen)


def peft_targets(model: nn.Module, chosen: list[str], head: list[str]) -> list[str]:
    """adapter_config.json's target_modules for adapter layers at `chosen`. A suffix must
    pick no other module of the model (peft tries every module a suffix names, so ConvNeXt's
    stage `stages.1` rules out the suffix `1` of `downsampling_layer.1`); the head is left out."""
    adapted = tuple(n + "." for n in chosen)  # lora_A, lora_B... inside the adapter layers
    names = [n for n, _ in model.named_modules() if n and not n.startswith(adapted)
             and not any(n == h or n.startswith(h + ".") for h in head)]
    return compact(chosen, names)


def inject(method: str, model: nn.Module, targets: list[str] | str, head: list[str],
           layers_for: Callable[[list[str]], LayerFactory],
           extra: tuple[type[nn.Module], ...] = ()) -> ApplyReport:
    """Select the targets, freeze the model, replace each target, train the head; report.

    `layers_for(chosen)` runs before the model changes: it may refuse the choice or build
    what the layers share (VeRA's projections), and returns the factory of each layer.
    """
    chosen = select(model, targets, exclude=head, extra=extra)
    make_layer = layers_for(chosen)
    freeze_all(model)
    for name in chosen:
        replace_module(model, name, make_layer(name, model.get_submodule(name)))
    unfreeze(model, head)
    return report(method, model, chosen, head)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def check_targets(v: list[str] | str, keywords: tuple[str, ...] = (ALL_LINEAR,)) -> list[str] | str:
    """Config-time check of a targets value: a non-empty list of names, a keyword, or a regex."""
    if isinstance(v, list):
        if not v or any(not t.strip() for t in v):
            choices = f"'{keywords[0]}'" if len(keywords) == 1 else f"one of: {', '.join(keywords)}"
            raise ValueError(f"give at least one module name, a regex, or {choices}")
        return v
    if v not in keywords:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regex ({exc})") from None
    return v


def auto_targets(model: nn.Module, table: dict[str, list[str]], method: str,
                 key: str = "method.targets", example: str = "[q_proj, v_proj]") -> list[str]:
    """The default target names of `method` for this model's type (e.g. bert, llama)."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in table:
        raise MethodError(f"{key}: {method} has no default for model type '{kind}' (it has defaults "
                          f"for {', '.join(sorted(table))}); list the layers, e.g. {key}: {example}")
    return list(table[kind])
