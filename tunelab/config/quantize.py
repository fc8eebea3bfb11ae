"""Which runs may use model.quantize (tunelab/models/quantize.py), checked before any weights load.

A quantized base is frozen and never saved: the methods that train on it are those whose
layers sit on top of a Linear and save only an adapter. Each refusal names the key at fault
and what to set instead (ValueError: the config loader reports it with the key named).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from tunelab.methods.registry import METHODS

# methods whose layers work on a QuantizedLinear (methods/layer.py) and save an adapter
QUANTIZED_METHODS = ("lora", "dora", "ia3", "vera")
QUANTIZED_TASKS = ("classification", "token_classification", "causal_lm")


def check_quantized_run(run: Any) -> None:
    """Refuse what a quantized base cannot do (run: a run config)."""
    model = run.model
    if model.quantize is None:
        if model.compute_dtype != "float32":
            raise ValueError("model.compute_dtype sets what a quantized layer computes in; set "
                             "model.quantize (nf4, fp4 or int8) too, or remove model.compute_dtype")
        return
    q = f"model.quantize: {model.quantize}"
    name = run.method.name
    if not METHODS[name].saves_adapter:
        raise ValueError(f"method.name: {name} trains or saves the base weights, which {q} keeps "
                         f"quantized and frozen; use one of {', '.join(QUANTIZED_METHODS)} on a "
                         "quantized base, or set model.quantize: null")
    if name not in QUANTIZED_METHODS:
        raise ValueError(f"method.name: {name} is not supported on a quantized base ({q}); use "
                         f"one of {', '.join(QUANTIZED_METHODS)}, or set model.quantize: null")
    if getattr(run.method, "init", None) == "pissa":
        raise ValueError(f"method.init: pissa rewrites the base weight, which {q} keeps quantized "
                         "and frozen; use init: default or gaussian")
    if run.task not in QUANTIZED_TASKS:
        raise ValueError(f"task: {run.task} runs cannot use a quantized base yet (supported: "
                         f"{', '.join(QUANTIZED_TASKS)}); set model.quantize: null")
    if importlib.util.find_spec("bitsandbytes") is None:  # before any weights load
        raise ValueError(f"{q} needs the bitsandbytes package (its CPU backend quantizes here): "
                         "pip install 'bitsandbytes>=0.50'")
    if run.train.distributed == "fsdp":
        raise ValueError(f"train.distributed: fsdp shards parameters, and {q} keeps the base "
                         "weights as packed buffers it would not shard; use ddp")


def refuse_quantize(model: Any, command: str) -> None:
    """For commands that load their models their own way (continual, meta): not quantized yet."""
    if model.quantize is not None:
        raise ValueError(f"model.quantize: {command} does not train on a quantized base yet; "
                         "set model.quantize: null")
