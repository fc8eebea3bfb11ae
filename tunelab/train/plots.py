"""What a finished run shows: a PNG of losses and the eval metric, and a short summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_history(history: list[dict[str, Any]], metric: str, path: Path) -> Path | None:
    """Train/eval loss against step (left) and the eval metric (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in history if "train_loss" in r]
    evals = [r for r in history if r.get("split") == "dev"]
    if not train and not evals:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        left.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train loss")
    if evals:
        left.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="dev loss")
        right.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", color="tab:green")
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.legend()
    left.grid(alpha=0.3)
    right.set_xlabel("step")
    right.set_ylabel(f"dev {metric}")
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
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
