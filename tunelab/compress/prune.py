"""`tunelab prune RUN OUT`: remove the least important heads, FFN neurons and layers of a
trained run (scored by tunelab/compress/importance.py), write a plain Hugging Face model
directory with a record of what went, then fine-tune it briefly to recover.

Every layer loses the same number of heads and neurons: a transformers config holds one
head count and one FFN width for all layers, and the result must load with plain
transformers. Within a layer the least important go (per KV group under grouped-query
attention). Layers to drop are the ones whose skipping raises the loss least.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.compress.importance import Scores, score
from tunelab.compress.record import RECORD, describe, rounded, write_record
from tunelab.errors import AdapterError, ConfigError, ModelError
from tunelab.io import DiskFullError, atomic_dir
from tunelab.methods.peft_format import merge
from tunelab.models.prune import (
    HEAD_ARCHITECTURES,
    HeadLayout,
    check_head_count,
    ffn_width,
    head_layout,
    head_support,
    parameter_count,
    prune_ffn,
    prune_heads,
)
from tunelab.models.surgery import drop_layers, layer_count
from tunelab.recipes.setup import setup
from tunelab.runs.layout import load_run_config, read_run_info
from tunelab.runs.trained import base_of, load_trained

SUPPORTED_TASKS = ("classification", "causal_lm")


@dataclass(frozen=True)
class PruneOptions:
    heads: float | None = None   # share of each layer's query heads to remove
    ffn: float | None = None     # share of each layer's FFN neurons to remove
    layers: int | None = None    # how many layers to drop
    examples: int = 256          # training examples the importance is measured on
    recover_steps: int = 100     # recovery fine-tune steps (0: none)


def _fraction(option: str, value: float | None) -> None:
    if value is not None and not 0.0 < value < 1.0:
        raise ConfigError(f"{option} {value}: the share to remove, a fraction between 0 and 1 "
                          "(exclusive), e.g. 0.25")


def heads_removed(option: float, layout: HeadLayout) -> int:
    """Query heads removed per KV group (grouped-query attention) or per layer (one query head
    per group: whole heads go, with their keys and values)."""
    units = layout.per_group if layout.per_group > 1 else layout.heads
    where = (f"each of the {layout.kv_heads} KV groups holds {units} query heads"
             if layout.per_group > 1 else f"each layer has {units} heads")
    r = round(option * units)
    if not 1 <= r < units:
        raise ConfigError(f"--heads {option}: removes {r} of {units} heads ({where}, and each "
                          f"group keeps the same number); give a fraction from {1 / units:.3g} "
                          f"to {(units - 1) / units:.3g}")
    return r


def neurons_removed(option: float, width: int) -> int:
    r = round(option * width)
    if not 1 <= r < width:
        raise ConfigError(f"--ffn {option}: removes {r} of the {width} FFN neurons per layer; give "
                          f"a fraction from {1 / width:.3g} to {(width - 1) / width:.3g}")
    return r


def check_options(opts: PruneOptions, config: Any) -> None:
    """Every option against the model's config, before any weights load."""
    if opts.heads is None and opts.ffn is None and opts.layers is None:
        raise ConfigError("prune: nothing to remove; give --heads FRACTION, --ffn FRACTION "
                          "and/or --layers K")
    _fraction("--heads", opts.heads)
    _fraction("--ffn", opts.ffn)
    if opts.examples < 1:
        raise ConfigError(f"--examples {opts.examples}: give 1 or more training examples")
    if opts.recover_steps < 0:
        raise ConfigError(f"--recover-steps {opts.recover_steps}: give 0 (no recovery) or more")
    if opts.heads is not None:
        why = head_support(config)
        if why:
            raise ConfigError(f"--heads: {why}. Heads can be pruned in {HEAD_ARCHITECTURES}; "
                              "for this model use --ffn FRACTION and --layers K")
        layout = head_layout(config)
        r = heads_removed(opts.heads, layout)
        left = layout.heads - (r * layout.kv_heads if layout.per_group > 1 else r)
        try:
            check_head_count(config, left, layout.kv_heads if layout.per_group > 1 else left)
        except ModelError as exc:
            raise ConfigError(f"--heads {opts.heads}: {exc}") from None
    if opts.ffn is not None:
        try:
            neurons_removed(opts.ffn, ffn_width(config))
        except ModelError as exc:
            raise ConfigError(f"--ffn: {exc}") from None
    n = layer_count(config)
    if opts.layers is not None and not 1 <= opts.layers < n:
        raise ConfigError(f"--layers {opts.layers}: the number of layers to drop; the model has "
                          f"{n}, so give 1 to {n - 1}")


def least(scores: list[float], remove: int) -> list[int]:
    """Indices of the `remove` lowest scores (ties: the lower index goes first)."""
    return sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:remove])


def head_plan(scores: list[list[float]], layout: HeadLayout, remove: int) -> dict[int, list[int]]:
    """Removed query heads per layer: the `remove` least important of each KV group, or of
    the layer when heads go with their keys and values."""
    plan = {}
    for layer, s in enumerate(scores):
        if layout.per_group == 1:
            plan[layer] = least(s, remove)
            continue
        p = layout.per_group
        plan[layer] = [g * p + h for g in range(layout.kv_heads)
                       for h in least(s[g * p:(g + 1) * p], remove)]
    return plan


def _kept(removed: dict[int, list[int]], width: int) -> dict[int, list[int]]:
    return {i: [j for j in range(width) if j not in set(r)] for i, r in removed.items()}


def prune_run(run_dir: Path, out: Path, opts: PruneOptions,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score, prune and write OUT (model, tokenizer, RECORD); then recover unless
    opts.recover_steps is 0. Returns the record."""
    from transformers import AutoConfig

    info = read_run_info(run_dir)
    if info.get("task") not in SUPPORTED_TASKS:
        raise ConfigError(f"prune: {run_dir} is a {info.get('task')} run; pruning supports "
                          f"{', '.join(SUPPORTED_TASKS)} runs")
    _check_out(out, run_dir)
    config = AutoConfig.from_pretrained(str(base_of(info)), trust_remote_code=False)
    check_options(opts, config)
    cfg = load_run_config(run_dir)
    s = setup(cfg, lambda _: None)  # the run's own training data, encoded as it trained
    s.model = None  # the base it loaded: the run's trained model is loaded next
    if hasattr(s.task, "packing"):
        s.task.packing = False  # one example per row, so each example has its own gates
    model, tokenizer = _merged(run_dir)
    layout = head_layout(model.config) if opts.heads is not None else None
    scores = score(model, s.task, s.train, opts.examples, cfg.train.batch_size,
                   layout.heads if layout else None, opts.ffn is not None, opts.layers is not None)
    record = _prune(model, scores, opts, layout)
    record.update({"source_run": str(Path(run_dir).resolve()), "task": info["task"],
                   "examples": scores.examples, "base_loss": scores.base_loss,
                   "options": {"heads": opts.heads, "ffn": opts.ffn, "layers": opts.layers}})
    _write(out, model, tokenizer, record)
    for line in describe(record):
        log(line)
    if opts.recover_steps:
        record["recovery"] = recover(run_dir, out, opts.recover_steps, log)
        write_record(out, record)
    return record


def _merged(run_dir: Path) -> tuple[Any, Any]:
    """(model with the run's adapter merged into its weights, tokenizer)."""
    model, tokenizer, info = load_trained(run_dir)
    try:
        merge(model)
    except AdapterError as exc:
        raise ModelError(f"prune: a {info['method']} run cannot be merged into plain weights "
                         f"({exc}); prune a run of a mergeable method or a full one") from None
    return model, tokenizer


def _prune(model: Any, scores: Scores, opts: PruneOptions,
           layout: HeadLayout | None) -> dict[str, Any]:
    """Cut the model in place; the record of what went (original layer numbering)."""
    record: dict[str, Any] = {"parameters": {"before": parameter_count(model)}, "scores": {}}
    if layout is not None and scores.heads is not None:
        removed = head_plan(scores.heads, layout, heads_removed(opts.heads or 0, layout))
        new = prune_heads(model, _kept(removed, layout.heads))
        record["heads"] = {"before": layout.heads, "after": new.heads, "kv_before": layout.kv_heads,
                           "kv_after": new.kv_heads, "head_dim": layout.head_dim,
                           "removed": {str(i): r for i, r in removed.items()}}
        record["scores"]["heads"] = rounded(scores.heads)
    if scores.ffn is not None:
        width = len(scores.ffn[0])
        r = neurons_removed(opts.ffn or 0, width)
        removed = {i: least(s, r) for i, s in enumerate(scores.ffn)}
        after = prune_ffn(model, _kept(removed, width))
        record["ffn"] = {"before": width, "after": after,
                         "removed": {str(i): n for i, n in removed.items()}}
        record["scores"]["ffn"] = rounded(scores.ffn)
    if scores.layers is not None:
        n = len(scores.layers)
        dropped = least(scores.layers, opts.layers or 0)
        drop_layers(model, [i for i in range(n) if i not in dropped])
        record["layers"] = {"before": n, "after": n - len(dropped), "dropped": dropped}
        record["scores"]["layers"] = rounded(scores.layers)
    record["parameters"]["after"] = parameter_count(model)
    return record


def _check_out(out: Path, run_dir: Path) -> None:
    if out.resolve() == Path(run_dir).resolve() or Path(run_dir).resolve() in out.resolve().parents:
        raise ConfigError(f"prune: OUT {out} is inside the run {run_dir}; give a new directory")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORD).is_file():
        raise ConfigError(f"prune: OUT {out} already holds other files (no {RECORD} of an earlier "
                          "prune); give a new or empty directory")


def _write(out: Path, model: Any, tokenizer: Any, record: dict[str, Any]) -> None:
    """OUT as a whole (an earlier prune there, recovered run included, is replaced)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_dir(out) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_record(tmp, record)
    except DiskFullError as exc:
        raise ModelError(str(exc)) from None


def recover(run_dir: Path, out: Path, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The run's own config on the pruned model for `steps` steps, into OUT/recovered (a
    normal run directory). Options that fit only the original model are cleared."""
    from tunelab.config import load_config
    from tunelab.recipes.run import train

    overrides = [f"model.name={out}", f"train.max_steps={steps}",
                 f"output_dir={out / 'recovered'}", "model.keep_layers=null",
                 "model.init_adapter=null"]
    cfg = load_config(Path(run_dir) / "config.yaml", overrides, log=log)
    log(f"recovery: {steps} steps of the run's config on the pruned model -> {out / 'recovered'}")
    summary = train(cfg, overwrite=True, log=log)
    return {"steps": steps, "run": "recovered", "initial_dev": summary.get("initial_dev"),
            "final_dev": summary.get("final_dev")}
