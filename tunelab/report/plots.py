"""Report figures as PNG bytes: one run's curves, and several runs' curves overlaid.
matplotlib's object API (no pyplot), so nothing global changes and no display is needed."""

from __future__ import annotations

import io
from typing import Any

from tunelab.report.rundata import RunFiles

# Dev scores drawn beside the loss, in this order, when a run logged them.
DEV_SCORES = ["accuracy", "macro_f1", "f1", "precision", "recall", "token_accuracy", "perplexity"]


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _panel(ax: Any, ylabel: str) -> None:
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def run_curves(run: RunFiles) -> bytes | None:
    """Train and dev loss (left), dev scores (middle), learning rate (right)."""
    from matplotlib.figure import Figure

    train, dev = run.train_records(), run.dev_records()
    if not train and not dev:
        return None
    fig = Figure(figsize=(13, 3.8))
    loss, scores, lr = fig.subplots(1, 3)
    if train:
        loss.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train loss")
        lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:purple")
    if dev:
        loss.plot([r["step"] for r in dev], [r["loss"] for r in dev], "o-", label="dev loss")
    for key in DEV_SCORES:
        points = [(r["step"], r[key]) for r in dev if isinstance(r.get(key), (int, float))]
        if points:
            scores.plot(*zip(*points), "o-", label=f"dev {key}")
    _panel(loss, "loss")
    _panel(scores, "dev score")
    _panel(lr, "learning rate")
    return _png(fig)


def compare_curves(runs: list[RunFiles]) -> bytes | None:
    """Train loss, dev loss and each run's selection metric, one line per run."""
    from matplotlib.figure import Figure

    if not any(r.history for r in runs):
        return None
    fig = Figure(figsize=(13, 3.8))
    train_ax, dev_ax, metric_ax = fig.subplots(1, 3)
    metrics = sorted({r.metric for r in runs})
    for run in runs:
        train, dev = run.train_records(), run.dev_records()
        if train:
            train_ax.plot([r["step"] for r in train], [r["train_loss"] for r in train],
                          label=run.name)
        if dev:
            dev_ax.plot([r["step"] for r in dev], [r["loss"] for r in dev], "o-", label=run.name)
            label = run.name if len(metrics) == 1 else f"{run.name} ({run.metric})"
            metric_ax.plot([r["step"] for r in dev], [r[run.metric] for r in dev], "o-",
                           label=label)
    _panel(train_ax, "train loss")
    _panel(dev_ax, "dev loss")
    _panel(metric_ax, "dev " + " / ".join(metrics))
    return _png(fig)
