"""`OUT/tunelab_pruned.json`: what a prune removed, measured against, and what it cost, kept
beside the pruned model so `tunelab info` (and a reader) can tell what the model is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.errors import ModelError

RECORD = "tunelab_pruned.json"


def rounded(values: Any) -> Any:
    """Scores with 6 significant digits (nested lists), so the record stays readable."""
    if isinstance(values, list):
        return [rounded(v) for v in values]
    return float(f"{values:.6g}")


def read_record(model_dir: Path) -> dict[str, Any] | None:
    """The pruning record of a model directory, or None when it was not pruned by tunelab."""
    path = Path(model_dir) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable pruning record ({exc}); prune the run again") from None


def describe(record: dict[str, Any]) -> list[str]:
    """Lines saying what was removed, for `tunelab prune` and `tunelab info`."""
    p = record["parameters"]
    source = (f"pruned from run {record['source_run']} (importance on {record['examples']} "
              f"training examples, loss {record['base_loss']:.4f})")
    size = (f"parameters: {p['before']:,} -> {p['after']:,} "
            f"({100 * (1 - p['after'] / max(p['before'], 1)):.1f}% removed)")
    lines = [source, size]
    heads = record.get("heads")
    if heads:
        lines.append(f"attention heads per layer: {heads['before']} -> {heads['after']} "
                     f"(key/value heads {heads['kv_before']} -> {heads['kv_after']}); removed "
                     + "; ".join(f"layer {i}: {h}" for i, h in heads["removed"].items()))
    ffn = record.get("ffn")
    if ffn:
        lines.append(f"FFN neurons per layer: {ffn['before']} -> {ffn['after']} "
                     f"({ffn['before'] - ffn['after']} removed in each layer)")
    layers = record.get("layers")
    if layers:
        lines.append(f"layers: {layers['before']} -> {layers['after']} (dropped {layers['dropped']}"
                     f", original numbering)")
    recovery = record.get("recovery")
    if recovery:
        lines.append(f"recovery fine-tune: {recovery['steps']} steps, run {recovery['run']}")
        for when, key in (("before", "initial_dev"), ("after", "final_dev")):
            if recovery.get(key):
                lines.append(f"  dev {when} recovery: {_scores(recovery[key])}")
    return lines


def _scores(scores: dict[str, Any]) -> str:
    return "  ".join(f"{k}: {v:.4f}" for k, v in scores.items() if isinstance(v, (int, float)))


def write_record(model_dir: Path, record: dict[str, Any]) -> None:
    from tunelab.io import write_text

    write_text(Path(model_dir) / RECORD, json.dumps(record, indent=1) + "\n")
