"""What `tunelab serve TARGET...` loads: each target is a run directory, a PEFT adapter
directory, an ONNX export (`tunelab export RUN --to onnx OUT`) or a model name. Generative
targets that share a base model share one engine (the base is loaded once; each adapter is a
model id); encoder runs and ONNX exports are served as they are."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import AdapterError, ModelError
from tunelab.methods.peft_format import CONFIG_FILE
from tunelab.models import load_causal_lm, load_tokenizer
from tunelab.models.resolve import resolve as resolve_model
from tunelab.runs.layout import (
    ADAPTER_DIR,
    MODEL_DIR,
    RUN_INFO,
    load_run_config,
    read_run_info,
)
from tunelab.runs.named_adapters import RESERVED, adapter_name, split_named
from tunelab.runs.onnx_model import is_onnx_export
from tunelab.runs.trained import base_of
from tunelab.serve.encoders import EncoderModel
from tunelab.serve.engine import Engine

ENCODER_TASKS = ("classification", "token_classification")


@dataclass
class Served:
    """Every model id the server answers for, and what serves it."""

    engines: dict[str, Engine] = field(default_factory=dict)
    encoders: dict[str, EncoderModel] = field(default_factory=dict)

    def ids(self) -> list[str]:
        return [*dict.fromkeys(i for e in self.engines.values() for i in e.model_ids()),
                *self.encoders]

    def card(self, model_id: str) -> dict[str, Any]:
        """Fields GET /v1/models adds to `model_id`'s entry (an ONNX export's backend)."""
        encoder = self.encoders.get(model_id)
        return encoder.card() if encoder is not None else {}


@dataclass
class _Base:
    """A generative base to load once: its directory (and full fine-tuned weights), its id,
    the adapters to add, and the chat template a run trained with."""

    path: Path
    model_id: str
    weights_from: Path | None = None
    adapters: dict[str, Path] = field(default_factory=dict)
    template: str | None = None


def load_targets(targets: list[str], adapters: list[str] | None = None,
                 **engine_options: Any) -> Served:
    """Load every target (see module docstring); `adapters` ([NAME=]PATH) join the first
    generative base. `engine_options` go to each Engine (max_batch, ...)."""
    bases: dict[tuple[Path, Path | None], _Base] = {}
    served = Served()
    for target in targets:
        _add_target(target, bases, served)
    if adapters:
        if not bases:
            raise AdapterError("--adapter needs a generative base among the targets (a model "
                               "name, a causal-LM run or an adapter directory)")
        first = next(iter(bases.values()))
        for text in adapters:
            name, path = split_named(text)
            _put_adapter(first, name or adapter_name(Path(path), set(first.adapters)), Path(path))
    for base in bases.values():
        engine = _engine(base, **engine_options)
        for model_id in engine.model_ids():
            _claim(served, model_id)
            served.engines[model_id] = engine
    return served


def _add_target(target: str, bases: dict[tuple[Path, Path | None], _Base], served: Served) -> None:
    path = Path(target).expanduser()
    if is_onnx_export(path):  # ONNX Runtime runs it; predict's code scores it
        _claim(served, path.name)
        served.encoders[path.name] = EncoderModel.from_onnx(path, path.name)
    elif (path / RUN_INFO).is_file():
        info = read_run_info(path)
        task = info.get("route", info["task"])
        if task in ENCODER_TASKS:
            _claim(served, path.name)
            served.encoders[path.name] = EncoderModel.from_run(path, path.name)
            return
        if task != "causal_lm":
            raise ModelError(f"{target}: a {info['task']} run; serve runs causal-LM, "
                             "classification or token_classification runs")
        template = load_run_config(path).data.template
        text = Path(template).expanduser().read_text(encoding="utf-8") if template else None
        if info["artifact"] == MODEL_DIR:  # full fine-tuning: a base of its own
            base = _base(bases, base_of(info), path.name, path / MODEL_DIR)
        else:
            base = _base(bases, base_of(info), base_of(info).name)
            _put_adapter(base, path.name, path / ADAPTER_DIR)
        base.template = base.template or text
    elif (path / CONFIG_FILE).is_file():
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        source = config.get("base_model_name_or_path")
        if not source:
            raise AdapterError(f"{path / CONFIG_FILE}: no base_model_name_or_path; serve the "
                               "base by name and add this adapter with --adapter NAME=PATH")
        base = _base(bases, resolve_model(str(source)), Path(str(source)).name)
        _put_adapter(base, adapter_name(path, set(base.adapters)), path)
    elif _is_generative(resolve_model(target)):
        _base(bases, resolve_model(target), target)
    else:
        _claim(served, target)
        served.encoders[target] = EncoderModel.from_base(Path(target), target)


def _base(bases: dict[tuple[Path, Path | None], _Base], path: Path, model_id: str,
          weights_from: Path | None = None) -> _Base:
    key = (path.resolve(), weights_from)
    if key not in bases:
        bases[key] = _Base(path, model_id, weights_from)
    return bases[key]


def _put_adapter(base: _Base, name: str, path: Path) -> None:
    if is_onnx_export(path):
        raise AdapterError(f"{path} is an ONNX export, a whole model with its adapter folded "
                           "in; serve it as a TARGET of its own, not with --adapter")
    if name in RESERVED or name in base.adapters or name == base.model_id:
        raise AdapterError(f"the adapter name {name!r} is taken or reserved; name it with "
                           "--adapter NAME=PATH")
    base.adapters[name] = path


def _claim(served: Served, model_id: str) -> None:
    if model_id in served.engines or model_id in served.encoders:
        raise ModelError(f"two targets are served as {model_id!r}; rename one (copy the run "
                         "directory, or give an adapter a name with --adapter NAME=PATH)")


def _is_generative(path: Path) -> bool:
    config = path / "config.json"
    if not config.is_file():  # a GGUF file: transformers reads causal LMs from it
        return True
    archs = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def _engine(base: _Base, **options: Any) -> Engine:
    model = load_causal_lm(base.path, weights_from=base.weights_from)
    tokenizer = load_tokenizer(base.path)
    if base.template:  # the template the run trained with
        tokenizer.chat_template = base.template
    engine = Engine(model, tokenizer, base.model_id, **options)
    for name, path in base.adapters.items():
        engine.add_adapter(name, path)
    return engine
