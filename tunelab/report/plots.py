"""Report figures as PNG bytes: one run's curves (drawn by tunelab.train.plots, as the run's
plot.png), and several runs' curves overlaid."""

from __future__ import annotations


from tunelab.report.rundata import RunFiles
from tunelab.train.plots import panel as _panel
from tunelab.train.plots import png as _png
from tunelab.train.plots import run_curves as curves

def run_curves(run: RunFiles) -> bytes | None:
    """Train and dev loss, dev scores and learning rate of one run (the run's own plot.png)."""
    return curves(run.history)


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
