"""A finished run as the starting point of another: `model.name: <run dir>`.

The run's model (adapter merged into its base, or its fully fine-tuned weights) is written
once as a plain Hugging Face directory, `<run dir>/as_base/`, and the next run loads that as
its base. Task heads trained for a label set (classification, NER) are left out, since the
next run has its own labels; an MLM head is kept, so MLM can go on from an MLM run. Weights
the run's task model lacks but its base checkpoint holds (BERT's pooler, which a masked LM
has no place for) are copied from that base, so a classifier built on the result starts
from the same pooler as one built on the original model. The config is the base's own (a
dropout override of the earlier run does not carry over). The directory is rebuilt when the
run's artifact changes (a fingerprint of its files is kept beside it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tunelab.errors import AdapterError, ModelError
from tunelab.io import DiskFullError, atomic_dir
from tunelab.methods.peft_format import load_adapter, merge
from tunelab.models import (
    load_causal_lm,
    load_classifier,
    load_seq2seq,
    load_token_classifier,
    load_tokenizer,
)
from tunelab.models.heads import head_modules
from tunelab.models.mlm import load_masked_lm
from tunelab.models.quantize import quantize_model
from tunelab.models.resolve import resolve as resolve_model
from tunelab.models.student import student_base
from tunelab.models.vision import load_image_classifier, load_image_processor
from tunelab.runs.layout import ADAPTER_DIR, MODEL_DIR, read_run_info

AS_BASE = "as_base"
STAMP = "tunelab_source.json"
LABELLED = ("classification", "token_classification",  # their heads fit one label set
            "image_classification")


def is_run_dir(path: Path) -> bool:
    return (path / "run.json").is_file()


def run_chain(name: str) -> dict[str, Any]:
    """run.json keys recording where a run's base came from ({} for a plain model name):
    every earlier run, oldest first, with its task, method and own base."""
    path = Path(name).expanduser()
    if not is_run_dir(path):
        return {}

    info = read_run_info(path)
    link = {"run": str(path.resolve()), "task": info["task"], "method": info["method"],
            "base_model": info["base_model"]}
    return {"chain": [*info.get("chain", []), link]}


def fingerprint(artifact: Path) -> dict[str, list[int]]:
    return {str(p.relative_to(artifact)): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(artifact.rglob("*")) if p.is_file()}


def as_base(run_dir: Path) -> Path:
    """`run_dir/as_base/`, built now if missing or older than the run's artifact."""
    from transformers import AutoConfig

    info = read_run_info(run_dir)
    out = run_dir / AS_BASE
    stamp = {"run": str(run_dir.resolve()), "artifact": info["artifact"],
             "files": fingerprint(run_dir / info["artifact"])}
    if (out / STAMP).is_file() and json.loads((out / STAMP).read_text()) == stamp:
        return out
    model, tokenizer, _ = _trained(run_dir)
    state = _state(model, drop_heads=info["task"] in LABELLED)
    state.update(_base_only(Path(info["base_model"]), model, state))
    # the base's own config, not the run's dropout override
    config = AutoConfig.from_pretrained(info["base_model"], trust_remote_code=False)
    config.architectures = [type(model).__name__]
    try:
        with atomic_dir(out) as tmp:  # fsynced, then renamed into place as a whole
            config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
                      str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    except DiskFullError as exc:
        raise ModelError(str(exc)) from None
    return out


def _trained(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The run's model with any adapter merged into its weights."""
    model, tokenizer, info = load_trained(run_dir)
    try:
        merge(model)
    except AdapterError as exc:
        raise ModelError(f"model.name {run_dir}: a {info['method']} run cannot be a base for "
                         f"another run ({exc}); start from a run of a mergeable method "
                         "(lora, dora, ia3, vera, loha, lokr) or a full one") from None
    return model, tokenizer, info


def _state(model: torch.nn.Module, drop_heads: bool) -> dict[str, torch.Tensor]:
    """The state dict without tied copies (safetensors stores a tensor once; transformers ties
    them again on load) and, for labelled tasks, without the task head."""

    params = {n for n, _ in model.named_parameters()}
    copies = {n for n, _ in model.named_parameters(remove_duplicate=False)} - params
    heads = tuple(h + "." for h in head_modules(model)) if drop_heads else ()
    return {k: v for k, v in model.state_dict().items()
            if k not in copies and not k.startswith(heads)}


def _base_only(base: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    """Tensors the base checkpoint holds that the task model has no place for (a pooler)."""
    from transformers import AutoModel

    encoder, info = AutoModel.from_pretrained(str(base), dtype=torch.float32,
                                              trust_remote_code=False, output_loading_info=True)
    absent = set(info.get("missing_keys", ()))  # drawn at random, not in the checkpoint
    prefix = model.base_model_prefix + "." if model.base_model is not model else ""
    taken = set(state) | {n for n, _ in model.named_parameters(remove_duplicate=False)}
    return {prefix + k: v for k, v in encoder.state_dict().items()
            if k not in absent and prefix + k not in taken}


def base_of(info: dict[str, Any]) -> Path:
    """The run's base model directory. A run that started from another run (`chain`) has that
    run's as_base/ as its base; if it was deleted, it is rebuilt from the run it came from (and
    a model.keep_layers student from its source model)."""
    chain = info.get("chain")
    if Path(info["base_model"]).is_dir():
        return resolve_model(info["base_model"])
    source = as_base(Path(chain[-1]["run"])) if chain else None
    if info.get("keep_layers") is not None:
        return student_base(source or resolve_model(info["model_name"]), info["keep_layers"])
    return source or resolve_model(info["base_model"])


def load_trained(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, run info) of a finished run, in eval mode."""
    model, tokenizer, info = load_run_base(run_dir)
    if info["artifact"] != MODEL_DIR:
        load_adapter(model, run_dir / ADAPTER_DIR, head_modules(model))
    model.eval()  # the adapter's new layers too
    return model, tokenizer, info


def load_run_base(run_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, run info): the run's task model in eval mode, without its adapter
    (a full fine-tuning run's own weights)."""
    info = read_run_info(run_dir)
    base = base_of(info)
    full = run_dir / MODEL_DIR if info["artifact"] == MODEL_DIR else None
    image = info["task"] == "image_classification"  # its "tokenizer": the image processor
    tokenizer = load_image_processor(base) if image else load_tokenizer(base)
    if image:
        model = load_image_classifier(base, info["labels"], weights_from=full)
    elif info.get("route", info["task"]) == "causal_lm":  # translation runs have a route
        model = load_causal_lm(base, weights_from=full)
    elif info["task"] == "masked_lm":
        model = load_masked_lm(base, weights_from=full)[0]
    elif info.get("route") == "seq2seq":
        model = load_seq2seq(base, weights_from=full)
    elif info["task"] == "token_classification":
        model = load_token_classifier(base, info["labels"], weights_from=full,
                                      pad_token_id=tokenizer.pad_token_id)
    else:
        model = load_classifier(base, info["labels"], weights_from=full,
                                pad_token_id=tokenizer.pad_token_id, pooling=info.get("pooling"))
    if info.get("quantize"):  # the adapter trained on this quantized base: load it on the same
        quantize_model(model, info["quantize"]["scheme"], info["quantize"]["compute_dtype"])
    model.eval()
    return model, tokenizer, info
