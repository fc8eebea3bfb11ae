"""`tunelab merge A B ... --out OUT`: combine several LoRA adapters into one adapter, or into
the base model's weights. (`tunelab merge RUN_DIR OUT`, one run folded into its base, is
commands.merge.)

Each source is a run directory or a PEFT LoRA adapter directory. They are loaded side by
side onto their base model (multi_adapter.py), combined by add_weighted_adapter
(merging.py: peft's semantics), then written as a PEFT LoRA adapter or folded in.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tunelab.commands.merge_run import write_model
from tunelab.errors import AdapterError
from tunelab.io import write_text
from tunelab.methods.lora import lora_layers
from tunelab.methods.merging import CombineSpec
from tunelab.methods.multi_adapter import (
    add_weighted_adapter,
    load_named_adapter,
    save_named_adapter,
    set_adapter,
)
from tunelab.methods.peft_format import merge as merge_layers
from tunelab.methods.peft_format import read_adapter_config
from tunelab.models import load_causal_lm, load_seq2seq, load_tokenizer
from tunelab.models.load import AUTO_CLASSES
from tunelab.runs.layout import ADAPTER_DIR, RUN_INFO, write_json
from tunelab.runs.named_adapters import adapter_name, source_adapter
from tunelab.runs.resolve import resolve
from tunelab.runs.trained import load_run_base

MERGED = "merged"


def merge_adapters(sources: list[Path], out: Path, weights: list[float] | None, spec: CombineSpec,
                   into_base: bool = False, head: str | None = None, base: str | None = None) -> Path:
    """Combine the sources' adapters; write an adapter (a run directory when the first
    source is a run) or, with into_base, a plain transformers checkpoint. Returns `out`."""
    _check_out(out, sources)
    found = [source_adapter(p) for p in sources]
    weights = weights if weights is not None else [1.0 / len(sources)] * len(sources)
    if len(weights) != len(sources):
        raise AdapterError(f"--weights: {len(sources)} adapters but {len(weights)} weights; give "
                           "one weight per adapter")
    configs = [read_adapter_config(d)[0] for d, _ in found]
    spec.check({str(p): int(c.get("r", 0)) for p, c in zip(sources, configs)})  # before any loading
    bases = [str(info["base_model"]) if info else str(cfg.get("base_model_name_or_path"))
             for (_, info), cfg in zip(found, configs)]
    if base is None and len(set(bases)) > 1:
        i = next(k for k, b in enumerate(bases) if b != bases[0])
        raise AdapterError(f"{sources[i]} was trained on {bases[i]}, {sources[0]} on {bases[0]}; "
                           "combine adapters of one base model (or name it with --base if these "
                           "are the same model)")
    model, tokenizer, info = _base_model(sources, found, configs, base or bases[0])
    names: list[str] = []
    for (adapter_dir, _), path in zip(found, sources):
        names.append(adapter_name(path, set(names)))
        load_named_adapter(model, names[-1], adapter_dir)
    rank = add_weighted_adapter(model, names, weights, MERGED, spec, head)
    n_layers = sum(MERGED in layer.adapter_names() for layer in lora_layers(model).values())
    how = f"{spec.combine}" + (f", density {spec.density:g}" if spec.density is not None else "")
    print(f"combined {', '.join(f'{n} x {w:g}' for n, w in zip(names, weights))} ({how}): "
          f"rank {rank} on {n_layers} layers")
    task = info["task"] if info else _task_of(configs[0])
    if into_base:
        return _write_merged_model(model, tokenizer, out, info.get("route", task) if info else task)
    record = {"sources": [str(p) for p in sources], "names": names, "weights": weights,
              **asdict(spec), "rank": rank, "head_from": head}
    adapter_out = out / ADAPTER_DIR if info else out
    save_named_adapter(model, MERGED, adapter_out, base or bases[0], configs[0].get("task_type"))
    if info:  # a run directory: tunelab eval / predict / generate read it as they read a run
        first_run = next(p for p, (_, i) in zip(sources, found) if i)
        write_text(out / "config.yaml", (first_run / "config.yaml").read_text(encoding="utf-8"))
        write_json(out / RUN_INFO, {**info, "merge": record})
    write_text(adapter_out / "tunelab_merge.json", json.dumps(record, indent=2) + "\n")
    print(f"wrote {adapter_out} (PEFT LoRA adapter" +
          (f"; `tunelab eval {out}` and `tunelab predict {out}` use it)" if info else ")"))
    return out


def _check_out(out: Path, sources: list[Path]) -> None:
    """Never write over a source, a trained run or an adapter that no merge wrote."""
    if any(out.resolve() == p.resolve() for p in sources):
        raise AdapterError(f"--out {out} is one of the sources; choose a new directory")
    run_info = out / RUN_INFO
    if run_info.is_file() and "merge" not in json.loads(run_info.read_text(encoding="utf-8")):
        raise AdapterError(f"--out {out} holds a trained run; choose a new directory")
    if (out / "adapter_config.json").is_file() and not (out / "tunelab_merge.json").is_file():
        raise AdapterError(f"--out {out} holds an adapter that no merge wrote; choose a new directory")


def _task_of(config: dict[str, Any]) -> str:
    task = {"CAUSAL_LM": "causal_lm", "SEQ_2_SEQ_LM": "seq2seq"}.get(str(config.get("task_type")))
    if task is None:
        raise AdapterError(f"a {config.get('task_type')} adapter needs its run directory (for the "
                           "labels of its head): give a run directory as the first source")
    return task


def _base_model(sources: list[Path], found: list, configs: list[dict[str, Any]],
                base: str) -> tuple[Any, Any, dict[str, Any] | None]:
    """The base model of the first run among the sources, else of the adapters' task type."""

    for path, (_, info) in zip(sources, found):
        if info:
            model, tokenizer, info = load_run_base(path)
            return model, tokenizer, info
    task = _task_of(configs[0])
    path = resolve(base)
    model = load_causal_lm(path) if task == "causal_lm" else load_seq2seq(path)
    return model.eval(), load_tokenizer(path), None


def _write_merged_model(model: Any, tokenizer: Any, out: Path, task: str) -> Path:
    """Fold the combined adapter into the base weights and save a plain checkpoint."""
    set_adapter(model, MERGED)  # layers without it run, and are folded, as the base
    folded = sum(MERGED in layer.adapter_names() for layer in lora_layers(model).values())
    merge_layers(model)
    write_model(model, tokenizer, out)
    print(f"merged the combined adapter into {folded} layers of the base; wrote {out} (loads with "
          f"transformers.{AUTO_CLASSES.get(task, 'AutoModel')}.from_pretrained)")
    return out
