"""`tunelab merge RUN_DIR OUT`: fold one run's adapter into its base as a plain transformers model."""

from __future__ import annotations

from pathlib import Path

from typing import Any

from tunelab.errors import AdapterError
from tunelab.io import DiskFullError, atomic_dir, fault_point
from tunelab.methods.peft_format import merge as merge_layers
from tunelab.models.load import AUTO_CLASSES
from tunelab.runs.layout import read_run_info
from tunelab.runs.trained import load_trained


def merge_one(args: list[Path], options: list[str] | None = None) -> Path:
    """`tunelab merge RUN_DIR OUT` (no --out): fold one run's adapter into its base."""
    if options:
        raise AdapterError(f"merge: --{options[0].replace('_', '-')} combines adapters; name the "
                           "output with --out OUT (merge A B ... --out OUT)")
    if len(args) != 2:
        raise AdapterError(f"merge: give RUN_DIR OUT, or several adapters with --out OUT (got "
                           f"{len(args)} paths and no --out)")
    if any((args[1] / f).is_file() for f in ("run.json", "adapter_config.json")):
        raise AdapterError(f"merge: {args[1]} holds a run or an adapter; to combine adapters, "
                           "write the output with --out OUT")
    return merge(*args)


def merge(run_dir: Path, out: Path) -> Path:
    if read_run_info(run_dir).get("pooling") == "mean":  # checked before any weights load:
        # transformers would rebuild BERT's pooler, untrained
        raise AdapterError(f"merge: {run_dir} trained with model.pooling: mean, which a plain "
                           "transformers classifier cannot express (it would read its pooler "
                           "instead); keep the run directory, or export it --to onnx")
    model, tokenizer, info = load_trained(run_dir)
    n = merge_layers(model)
    write_model(model, tokenizer, out)
    auto = AUTO_CLASSES.get(info.get("route", info["task"]), "AutoModel")
    print(f"merged {n} adapter layers into the base; wrote {out} (loads with "
          f"transformers.{auto}.from_pretrained)")
    return out


def write_model(model: Any, tokenizer: Any, out: Path) -> None:
    """Save a merged model as a whole: filled under a temp name, fsynced, renamed to `out`
    (an interrupted merge leaves no half-written `out`, and an earlier merge there stays
    whole until the new one is complete). `out` must be new, empty or an earlier model
    directory (config.json): a folder of other files is never replaced."""
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise AdapterError(f"{out} already holds other files (no config.json of a merged "
                           "model); write the merged model to a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            fault_point("merge:half")  # the weights written, the tokenizer not yet
            tokenizer.save_pretrained(tmp)
    except DiskFullError as exc:
        raise AdapterError(str(exc)) from None
