"""What a continual run shows: the accuracy matrix as a heat map (PNG) and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.io import write_text


def heat_map(rows: list[list[float]], baseline: list[float], names: list[str],
             path: Path) -> Path:
    """R[i][j] (row: after training stage i; column: scored on stage j), with the untrained
    baseline as the first row; cells of stages not yet trained are hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = [baseline, *rows]
    labels = ["before training", *[f"after {n}" for n in names]]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(names), 1.2 + 0.6 * len(grid)))
    image = ax.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            unseen = j >= i  # row i is after stage i-1: stage j trained iff j <= i-1
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if value < 0.6 else "black", alpha=0.55 if unseen else 1.0)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(grid)), labels)
    ax.set_xlabel("scored on stage")
    ax.set_title("accuracy matrix R[i][j] (faded: stage not trained yet)", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _cell(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.4f}"


def write_report(summary: dict[str, Any], path: Path) -> Path:
    """The run's page: strategy, the matrix, ACC / BWT / FWT / forgetting and their meaning."""
    names, rows = summary["stages"], summary["matrix"]
    lines = [f"# Continual run: {summary['strategy']}", "",
             f"Stages, in order: {', '.join(names)} (metric per stage: "
             f"{', '.join(f'{n} {m}' for n, m in zip(names, summary['metrics']))}).", "",
             "## Accuracy matrix", "",
             "R[i][j]: the score on stage j's dev set after training stage i.", "",
             "| after \\ on | " + " | ".join(names) + " | train s |",
             "|---|" + "---|" * (len(names) + 1),
             "| before training | " + " | ".join(f"{v:.4f}" for v in summary["baseline"])
             + " | |"]
    for i, row in enumerate(rows):
        lines.append(f"| {names[i]} | " + " | ".join(f"{v:.4f}" for v in row)
                     + f" | {summary['stage_seconds'][i]:.1f} |")
    lines += ["", "## Summary", "",
              f"- average accuracy (last row): {summary['average_accuracy']:.4f}",
              f"- backward transfer, BWT: {_cell(summary['bwt'])} (mean of R[T-1][j] - R[j][j]; "
              "negative: forgetting)",
              f"- forward transfer, FWT: {_cell(summary['fwt'])} (mean of R[j-1][j] - "
              "b[j], b the score before any training)",
              f"- forgetting: {_cell(summary['forgetting'])} (mean drop from each stage's "
              "best score to its last)",
              f"- training time: {summary['train_seconds']:.1f} s (evaluation not included)",
              "", "![accuracy matrix](accuracy_matrix.png)", ""]
    write_text(path, "\n".join(lines))
    return path
