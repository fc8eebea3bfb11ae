"""What a finished run shows: a PNG of losses and the eval metric, and a short summary."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any


# Dev scores drawn beside the loss, in this order, when a run logged them.
DEV_SCORES = ["accuracy", "macro_f1", "f1", "precision", "recall", "token_accuracy", "perplexity"]


def png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def panel(ax: Any, ylabel: str) -> None:
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def run_curves(history: list[dict[str, Any]]) -> bytes | None:
    """Train and dev loss (left), dev scores (middle), learning rate (right), as PNG bytes.
    matplotlib's object API (no pyplot): nothing global changes and no display is needed."""
    from matplotlib.figure import Figure  # deferred: matplotlib costs a second at start-up

    train = [r for r in history if "train_loss" in r]
    dev = [r for r in history if r.get("split") == "dev"]
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
    panel(loss, "loss")
    panel(scores, "dev score")
    panel(lr, "learning rate")
    return png(fig)


def plot_history(history: list[dict[str, Any]], path: Path) -> Path | None:
    """The run's plot.png: the same curves `tunelab report` shows."""
    data = run_curves(history)
    if data is None:
        return None
    path.write_bytes(data)
    return path


def format_scores(scores: dict[str, Any]) -> str:
    names = {"f1": "entity F1", "precision": "entity P", "recall": "entity R",
             "token_accuracy": "token accuracy", "accuracy": "accuracy", "macro_f1": "macro-F1",
             "loss": "loss", "perplexity": "perplexity", "bleu": "BLEU", "chrf": "chrF",
             "mean": "mean task metric",
             "masked_accuracy": "masked-token accuracy"}
    return "  ".join(f"{names[k]}: {scores[k]:.4f}" for k in names if k in scores)


def task_lines(scores: dict[str, Any] | None) -> list[str]:
    """A multitask run's scores (`task/metric` keys), one indented line per task."""
    tasks = dict.fromkeys(k.split("/", 1)[0] for k in scores or {} if "/" in k)
    return [f"  {t}: " + format_scores({k.split("/", 1)[1]: v for k, v in scores.items()
                                        if k.startswith(t + "/")}) for t in tasks]


def summary_lines(summary: dict[str, Any]) -> list[str]:
    metric = summary["metric"]
    best = summary.get("best") or {}
    lines = [f"finished {summary['steps']}/{summary['total_steps']} steps: {summary['train_seconds']:.0f}s "
             f"of training steps ({summary['tokens_per_s']:.0f} real tokens/s, precision "
             f"{summary['precision']}), {summary['wall_seconds']:.0f}s in all"]
    if best:
        lines.append(f"best dev {metric}: {best[metric]:.4f} at step {best['step']}")
    if summary.get("initial_dev"):
        lines.append(f"dev before training: {format_scores(summary['initial_dev'])}")
        lines += task_lines(summary["initial_dev"])
    weights = "best" if summary["restored_best"] else "last"
    lines.append(f"dev after training:  {format_scores(summary['final_dev'])}  "
                 f"({summary['dev_examples']} examples, {weights} weights)")
    lines += task_lines(summary["final_dev"])
    if summary.get("test") is not None:
        lines.append(f"test before training: {format_scores(summary['test_before'])}")
        lines.append(f"test after training:  {format_scores(summary['test'])}")
    lines.append(f"trainable parameters: {summary['trainable']:,} / {summary['total']:,}")
    lines.append(f"{summary['artifact_kind']}: {summary['artifact']}")
    lines.append(f"metrics: {summary['metrics_file']}  plot: {summary['plot']}")
    return lines
