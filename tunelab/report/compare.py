"""A comparison page: several runs side by side (what they are, their final metrics, how their
configs differ) and their curves overlaid."""

from __future__ import annotations

from typing import Any

from tunelab.report.document import Document, Figure, Para, Section, Table
from tunelab.report.plots import compare_curves
from tunelab.report.rundata import RunFiles
from tunelab.report.sections import best_record, final_dev, scores

# Keys that differ between any two runs without saying anything about them.
UNINTERESTING = {"output_dir"}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def _cell(value: Any) -> Any:
    """Config values as written (a learning rate of 1e-5 must not print as 0.0000)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return f"{value:g}" if isinstance(value, float) else str(value)


def runs_table(runs: list[RunFiles]) -> Table:
    rows = []
    for r in runs:
        s = r.summary or {}
        rows.append([r.name, r.task, str(r.info.get("model_name", r.info["base_model"])),
                     r.info["method"], f"{s['steps']} / {s['total_steps']}" if s else "unfinished",
                     f"{s['trainable']:,}" if s else None,
                     f"{s['train_seconds']:.1f}" if s else None,
                     f"{s['tokens_per_s']:.0f}" if s else None])
    return Table("runs", ["run", "task", "model", "method", "steps", "trainable parameters",
                          "training time (s)", "real tokens / s"], rows)


def metrics_table(runs: list[RunFiles]) -> Table:
    """Rows: each score after training (dev, then test), the best dev value and its step."""
    columns = []
    for r in runs:
        s = r.summary or {}
        best = best_record(r) or {}
        col = {f"dev {k}": v for k, v in scores(final_dev(r)).items()}
        col.update({f"test {k}": v for k, v in scores(s.get("test")).items()})
        col[f"best dev {r.metric}"] = best.get(r.metric)
        col["best step"] = best.get("step")
        columns.append(col)
    names = list(dict.fromkeys(k for col in columns for k in col))
    group = ("dev ", "test ", "best dev ", "best step")
    names.sort(key=lambda k: next(i for i, g in enumerate(group) if k.startswith(g)))
    return Table("metrics", ["score", *(r.name for r in runs)],
                 [[name, *(col.get(name) for col in columns)] for name in names])


def config_diff(runs: list[RunFiles]) -> Table:
    flat = [flatten(r.config) for r in runs]
    keys = sorted({k for f in flat for k in f} - UNINTERESTING)
    differ = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    return Table("config-diff", ["config key", *(r.name for r in runs)],
                 [[k, *(_cell(f.get(k)) for f in flat)] for k in differ],
                 caption="the config keys whose values differ between the runs")


def per_entity(runs: list[RunFiles]) -> Table | None:
    """Per-type entity F1 side by side, when every run is a token-classification run."""
    if any(r.task != "token_classification" for r in runs):
        return None
    types = [(final_dev(r) or {}).get("per_type") or {} for r in runs]
    names = sorted({k for t in types for k in t})
    return Table("per-entity", ["entity F1 (dev)", *(r.name for r in runs)],
                 [[k, *(t[k]["f1"] if k in t else None for t in types)] for k in names])


def comparison(runs: list[RunFiles]) -> Document:
    metrics = [metrics_table(runs)]
    extra = per_entity(runs)
    if extra is not None:
        metrics.append(extra)
    curves: list[Any] = []
    png = compare_curves(runs)
    if png:
        curves.append(Figure("compare-curves.png", png,
                             "train loss, dev loss and dev metric per run"))
    else:
        curves.append(Para("None of the runs has a metrics.jsonl with records."))
    diff = config_diff(runs)
    sections = [Section("Runs", [runs_table(runs)]),
                Section("Final metrics", [Para("Dev scores of the saved weights (summary.json), "
                                               "test scores where the task has them; – where a "
                                               "run lacks the score."), *metrics]),
                Section("Curves", curves),
                Section("Config differences", [diff] if diff.rows else
                        [Para("The configs are identical apart from output_dir.")])]
    return Document(f"Comparison of {len(runs)} runs", ", ".join(r.name for r in runs), sections)
