"""Acceptance benchmark for `tunelab tune` and `tunelab cv`: MiniLM + LoRA on SST-2.

1. `tunelab train` of examples/sst2-tune.yaml as written (tunelab's LoRA defaults on a small
   budget): the default config's dev accuracy.
2. `tunelab tune` of the same file, 12 trials (TPE, median pruning), at the same budget per
   trial; its best config is retrained from best.yaml, which must reproduce the trial.
3. `tunelab cv --folds 5` of the default and of the best config on a 1,000-example SST-2
   training sample: mean +- std, scored away from the dev set that picked the best.
Every step is the CLI command shown in the table, run as its own process. Writes a section
into BENCHMARKS.md.

    python bench/cv_tune.py [--trials 12] [--folds 5] [--work runs/bench-tune] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, update_benchmarks  # noqa: E402

CONFIG = "examples/sst2-tune.yaml"


def run(cmd: list[str], log: list[str]) -> float:
    """Run a tunelab command, echo its stdout, return its wall time."""
    shown = "tunelab " + " ".join(cmd)
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tunelab", *cmd], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"failed: {shown}")
    log.append(shown)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--cv-examples", type=int, default=1000)
    ap.add_argument("--work", default="runs/bench-tune")
    ap.add_argument("--config", default=CONFIG, help="(a tiny config to try the script)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = ap.parse_args()
    work, cmds, config = Path(args.work), [], args.config
    secs = {}
    secs["default"] = run(["train", config, f"output_dir={work}/default", "--overwrite"], cmds)
    default = json.loads((REPO / work / "default" / "summary.json").read_text())
    secs["tune"] = run(["tune", config, "--trials", str(args.trials), f"output_dir={work}/tune",
                        "--overwrite"], cmds)
    best = json.loads((REPO / work / "tune" / "best.json").read_text())
    best_yaml = f"{work}/tune/best.yaml"
    secs["best"] = run(["train", best_yaml, f"output_dir={work}/best", "--overwrite"], cmds)
    retrained = json.loads((REPO / work / "best" / "summary.json").read_text())
    cv = {}
    for name, cfg in (("default", config), ("best", best_yaml)):
        secs[f"cv-{name}"] = run(["cv", cfg, "--folds", str(args.folds),
                                  f"data.max_train_examples={args.cv_examples}",
                                  "train.eval_every=null", f"output_dir={work}/cv-{name}",
                                  "--overwrite"], cmds)
        cv[name] = json.loads((REPO / work / f"cv-{name}" / "cv.json").read_text())

    acc_default = default["final_dev"]["accuracy"]
    acc_best = retrained["final_dev"]["accuracy"]
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in best["params"].items())
    lines = [
        "## Hyperparameter search and cross-validation: MiniLM + LoRA on SST-2 (CPU)",
        "",
        f"Measured {date.today()} on {machine()}. `{CONFIG}`: LoRA r8/alpha 16 on all linear "
        "layers of all-MiniLM-L6-v2, lr 5e-4, warmup 6% (tunelab's defaults), 1,000 seeded "
        "SST-2 training examples, max length 64, batch 32, one epoch (32 steps), seed 0; dev "
        f"accuracy on all 872 SST-2 dev examples. Search: lr log-uniform [1e-4, 1e-2], r in "
        "{4, 8, 16}, alpha in {8, 16, 32}, warmup ratio uniform [0, 0.2]; TPE seeded, median "
        "pruning at the step-16 evaluation, every trial at the same budget and seed as the "
        "default.",
        "",
        "| config | dev accuracy | params | wall (s) |",
        "|---|---|---|---|",
        f"| default (the file as written) | {acc_default:.4f} | lr=0.0005, r=8, alpha=16, "
        f"warmup_ratio=0.06 | {secs['default']:.0f} |",
        f"| best of {best['finished']} trials ({best['pruned']} pruned), retrained from "
        f"best.yaml | {acc_best:.4f} | {params} | {secs['best']:.0f} |",
        "",
        f"The study took {secs['tune']:.0f} s; trial {best['trial']} scored "
        f"{best['value']:.4f}, and retraining `best.yaml` gave {acc_best:.4f}. "
        f"Best minus default: {100 * (acc_best - acc_default):+.1f} points of dev accuracy. "
        "The dev set also "
        "picked the best trial, so the cross-validation below checks the gain on held-out "
        "training folds the search never scored:",
        "",
        f"| config | {args.folds}-fold CV accuracy (mean +- std) | per fold | macro-F1 | wall (s) |",
        "|---|---|---|---|---|",
    ]
    for name in ("default", "best"):
        r = cv[name]
        folds = " / ".join(f"{f['scores']['accuracy']:.3f}" for f in r["per_fold"])
        lines.append(f"| {name} | {r['mean']['accuracy']:.4f} +- {r['std']['accuracy']:.4f} | "
                     f"{folds} | {r['mean']['macro_f1']:.4f} +- {r['std']['macro_f1']:.4f} | "
                     f"{secs['cv-' + name]:.0f} |")
    lines += ["", f"CV: {args.cv_examples} seeded SST-2 training examples, folds "
              f"{cv['default']['split']}, each fold trained as above on the other folds "
              "(evaluated at the end only); std is the sample standard deviation over folds.",
              "", "Commands (`python bench/cv_tune.py`, one thread, run one after another):", ""]
    lines += [f"    {c}" for c in cmds]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        update_benchmarks(section)


if __name__ == "__main__":
    main()
