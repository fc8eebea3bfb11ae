"""K-fold cross-validation of one config: `tunelab cv CONFIG --folds K`.

The folds partition the training data the config names (data.train, after
data.max_train_examples); the dev and test files are not used. Fold k trains on the other
K-1 parts, exactly as `tunelab train` would (same steps, seed and settings), and its dev set
is its own held-out part. Each fold is a normal run directory, OUT/fold-k.
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
from pathlib import Path
from typing import Any, Callable

from tunelab.config import RunConfig
from tunelab.data import load_splits
from tunelab.data.conll import load_conll_splits
from tunelab.errors import ConfigError
from tunelab.eval.folds import Folds, grouped_folds, stratified_folds
from tunelab.recipes.run import train
from tunelab.runs.layout import ADAPTER_DIR, MODEL_DIR, check_replaceable, write_json
from tunelab.tasks.causal_lm import CausalLMTask
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.metrics import HIGHER_IS_BETTER
from tunelab.tasks.token_classification import TokenClassificationTask
from tunelab.tasks.translation import DecoderTranslationTask

CV_FILE = "cv.json"
LOG_FILE = "log.txt"
# what a finished fold or trial directory keeps: the adapter (or model), nothing
# heavy, or everything (resumable checkpoints and best/ weights too)
KEEP = ("adapters", "none", "all")

FoldHook = Callable[[int, list[dict[str, Any]]], None]


def run_metric(cfg: RunConfig) -> str:
    """The metric a run selects by: train.metric, or its task's default."""
    defaults = {"classification": ClassificationTask, "token_classification":
                TokenClassificationTask, "causal_lm": CausalLMTask,
                "translation": DecoderTranslationTask}
    return cfg.train.metric or defaults[cfg.task].default_metric


def tidy(run_dir: Path, keep: str) -> None:
    """Drop what `keep` does not ask for from a finished (or stopped) run directory."""
    if keep not in KEEP:
        raise ConfigError(f"--keep {keep}: choose from {', '.join(KEEP)}")
    if keep == "all":
        return
    drop = ["checkpoints", "best"] + ([ADAPTER_DIR, MODEL_DIR] if keep == "none" else [])
    for name in drop:
        shutil.rmtree(run_dir / name, ignore_errors=True)


def fresh_dir(out: Path, overwrite: bool, what: str) -> None:
    """An empty output directory: an earlier one is an error unless --overwrite (and only a
    directory tunelab wrote is ever replaced)."""
    check_replaceable(out, overwrite, what)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def file_log(path: Path, prefix: str = "") -> Callable[[str], None]:
    """A log function that appends to `path` (each run's lines stay out of the console)."""
    def log(line: str) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(prefix + line + "\n")
    return log


def make_folds(cfg: RunConfig, folds: int) -> tuple[Any, Folds]:
    """(the data's splits, the folds over its training part), seeded by data.split_seed."""
    seed = cfg.data.split_seed
    if cfg.task == "classification":
        splits = load_splits(cfg.data)
        return splits, stratified_folds([e.label for e in splits.train], folds, seed)
    if cfg.task == "token_classification":
        splits = load_conll_splits(cfg.data)
        return splits, grouped_folds([s.doc for s in splits.train], folds, seed, "sentences")
    raise ConfigError(f"task {cfg.task}: cross-validation is for classification and "
                      "token_classification runs")


def fold_splits(splits: Any, folds: Folds, k: int) -> Any:
    """Fold k's splits: it trains on the other folds and scores on its own part."""
    train = [splits.train[i] for i in folds.train_part(k)]
    held = [splits.train[i] for i in folds.held_out[k]]
    note = (f"fold {k + 1} of {len(folds.held_out)} ({folds.kind}): training on {len(train)}, "
            f"scoring on the {len(held)} held out")
    return dataclasses.replace(splits, train=train, dev=held, test=None, notes=[note])


def cross_validate(cfg: RunConfig, folds: int, keep: str = "adapters", overwrite: bool = False,
                   log: Callable[[str], None] = print, on_fold: FoldHook | None = None
                   ) -> dict[str, Any]:
    """Train and score every fold; write OUT/cv.json and return it. `on_fold(k, results)`
    runs after each fold (a tuner reports the running mean there and may raise to stop)."""

    if keep not in KEEP:
        raise ConfigError(f"--keep {keep}: choose from {', '.join(KEEP)}")
    splits, drawn = make_folds(cfg, folds)  # data errors before anything is written
    metric = run_metric(cfg)
    out = Path(cfg.output_dir)
    fresh_dir(out, overwrite, "cross-validation")
    log(f"{folds}-fold cross-validation over {drawn.size} training examples ({drawn.kind}, "
        f"seed {cfg.data.split_seed}); run logs in {out / LOG_FILE}")
    results: list[dict[str, Any]] = []
    for k in range(folds):
        run_dir = out / f"fold-{k}"
        fold_cfg = cfg.model_copy(update={"output_dir": str(run_dir)})
        part = fold_splits(splits, drawn, k)
        summary = train(fold_cfg, log=file_log(out / LOG_FILE, f"[fold {k}] "), splits=part)
        write_json(run_dir / "fold.json", {"fold": k, "folds": folds, "split": drawn.kind,
                                           "held_out": [x.where for x in part.dev]})
        tidy(run_dir, keep)
        results.append({"fold": k, "train": len(part.train), "held_out": len(part.dev),
                        "scores": _numbers(summary["final_dev"]), "best": summary["best"],
                        "steps": summary["steps"], "restored_best": summary["restored_best"],
                        "run_dir": str(run_dir)})
        log(f"fold {k}: {metric} {results[-1]['scores'][metric]:.4f} "
            f"({len(part.dev)} held out, {summary['train_seconds']:.0f}s of training)")
        if on_fold is not None:
            on_fold(k, results)
    report = summarise(results, metric, drawn.kind)
    write_json(out / CV_FILE, report)
    for line in report_lines(report):
        log(line)
    if any(r["restored_best"] and r["best"]["step"] != r["steps"] for r in results):
        log("note: train.load_best_at_end picked each fold's best evaluation on its own "
            "held-out part, which flatters the estimate; set train.load_best_at_end=false "
            "(or evaluate only at the end) for an unbiased one")
    return report


def summarise(results: list[dict[str, Any]], metric: str, kind: str) -> dict[str, Any]:
    """Mean and sample standard deviation (n - 1) of every metric over the folds."""
    names = [k for k in results[0]["scores"] if all(k in r["scores"] for r in results)]
    values = {k: [r["scores"][k] for r in results] for k in names}
    return {"folds": len(results), "split": kind, "metric": metric,
            "higher_is_better": HIGHER_IS_BETTER[metric],
            "mean": {k: statistics.fmean(v) for k, v in values.items()},
            "std": {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in values.items()},
            "per_fold": results}


def report_lines(report: dict[str, Any]) -> list[str]:
    metric = report["metric"]
    names = [metric] + [k for k in report["mean"] if k != metric]
    lines = ["fold  train  held-out  " + "  ".join(f"{k:>14}" for k in names)]
    for r in report["per_fold"]:
        lines.append(f"{r['fold']:>4}  {r['train']:>5}  {r['held_out']:>8}  "
                     + "  ".join(f"{r['scores'][k]:>14.4f}" for k in names))
    lines.append(f"{metric}: {report['mean'][metric]:.4f} +- {report['std'][metric]:.4f} "
                 f"(mean +- sample std over {report['folds']} folds)")
    lines.append("  ".join(f"{k}: {report['mean'][k]:.4f} +- {report['std'][k]:.4f}"
                           for k in names[1:]))
    return lines


def _numbers(scores: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))
            and not isinstance(v, bool)}
