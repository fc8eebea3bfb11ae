"""Continual fine-tuning against forgetting: MiniLM + LoRA on SST-2 -> AG News -> CoNLL-2003
(a head per stage, the stage known at test time), each stage a seeded subset, for naive,
replay, EWC, LwF and adapter-per-stage, over several seeds.

    python bench/continual.py [--train 2000] [--dev 500] [--epochs 1] [--seeds 0 1 2]
                              [--strategies naive replay ewc lwf adapter-per-stage] [--threads 1]
                              [--jobs 1] [--no-write]

Per strategy: the accuracy matrix averaged over seeds (accuracy for the two classification
stages, entity F1 for CoNLL), average accuracy, BWT, FWT (against each stage's score before
any training) and training time (the loop plus the strategy's own work, EWC's Fisher; the
evaluations that fill the matrix are not counted; the loop's own end-of-stage dev evaluation,
the same for every strategy, is), as wall seconds and as the process's CPU seconds: torch runs
on --threads threads (default 1, so no thread spins while it waits), and CPU seconds barely move
when other jobs share the machine, where wall seconds can double. The goals checked, on CPU
time: replay or EWC at most half of naive's |BWT| at <= 1.3x its training time;
adapter-per-stage's BWT exactly 0.
Seeds differ in head initialisation, batch order and replay / Fisher draws; the data subsets
stay fixed (data.split_seed 0). Writes its section into BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, update_benchmarks

TITLE = "## Continual: SST-2 -> AG News -> CoNLL-2003 (MiniLM + LoRA)"
STRATEGIES = {"naive": {"name": "naive"}, "replay": {"name": "replay", "per_stage": 64},
              "ewc": {"name": "ewc"}, "lwf": {"name": "lwf"},
              "adapter-per-stage": {"name": "adapter-per-stage"}}


def config(args: argparse.Namespace, strategy: dict, seed: int, out: Path) -> dict[str, Any]:
    sub = {"max_train_examples": args.train, "max_eval_examples": args.dev}
    return {"model": {"name": args.model, "max_length": 128},
            "method": {"name": "lora", "r": 8, "alpha": 16, "targets": ["query", "value"]},
            "train": {"epochs": args.epochs, "max_steps": args.steps, "batch_size": 32,
                      "lr": args.lr, "seed": seed, "log_every": 50, "checkpoint_every": 100000,
                      "keep_checkpoints": 1},
            "stages": [{"name": "sst2", "data": {"train": "sst2", **sub}},
                       {"name": "ag_news", "data": {"train": "ag_news", **sub}},
                       {"name": "conll2003", "task": "token_classification",
                        "data": {"train": "conll2003", **sub}}],
            "strategy": strategy, "output_dir": str(out)}


def one_run(args: argparse.Namespace, name: str, seed: int, out: Path) -> dict[str, Any]:
    """One strategy and seed, in this process (a pool worker when --jobs > 1): its CPU
    seconds are this process's alone."""
    import torch

    from tunelab.continual.config import validate_continual
    from tunelab.continual.run import continual

    torch.set_num_threads(args.threads)
    s = continual(validate_continual(config(args, STRATEGIES[name], seed, out)),
                  log=lambda line: None)
    print(f"{name} seed {seed}: ACC {s['average_accuracy']:.4f} BWT {s['bwt']:+.4f} "
          f"train {s['train_seconds']:.1f}s wall, {s['train_cpu_seconds']:.1f}s CPU", flush=True)
    return s


def run_all(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    runs = [(name, seed) for name in args.strategies for seed in args.seeds]
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"{name}-{seed}" for name, seed in runs]
        if args.jobs > 1:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
                summaries = list(pool.map(one_run, [args] * len(runs), *zip(*runs), outs))
        else:
            summaries = [one_run(args, name, seed, out) for (name, seed), out in zip(runs, outs)]
    results: dict[str, list[dict[str, Any]]] = {}
    for (name, _), s in zip(runs, summaries):
        results.setdefault(name, []).append(s)
    return results


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs)


def _sd(xs: list[float]) -> str:
    return f" ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else ""


def section(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    names = results[next(iter(results))][0]["stages"]
    cmd = " ".join(["python bench/continual.py", *sys.argv[1:]])
    lines = [TITLE, "", f"`{cmd}` ({datetime.date.today()}, {args.minutes:.1f} min wall; "
             f"{machine()}); {args.train} training / "
             f"{args.dev} dev examples per stage (seeded subsets), {args.epochs:g} epoch(s) per "
             f"stage" + (f" capped at {args.steps} steps" if args.steps else "") + f", lr "
             f"{args.lr:g}, batch 32, LoRA r 8 on query/value, seeds {args.seeds}, torch on "
             f"{args.threads} thread(s). Scores: "
             "accuracy (SST-2, AG News), entity F1 (CoNLL-2003). FWT is measured against each "
             "stage's score before any training (pretrained encoder, seeded untrained head).",
             "", "| strategy | ACC | BWT | FWT | train s (wall) | train s (CPU) | x naive CPU time |",
             "|---|---|---|---|---|---|---|"]
    naive_t = _mean([s["train_cpu_seconds"] for s in results["naive"]]) \
        if "naive" in results else None
    for name, runs in results.items():
        acc, bwt = [s["average_accuracy"] for s in runs], [s["bwt"] for s in runs]
        fwt, t = [s["fwt"] for s in runs], [s["train_cpu_seconds"] for s in runs]
        ratio = f"{_mean(t) / naive_t:.2f}" if naive_t else "n/a"
        wall = _mean([s["train_seconds"] for s in runs])
        lines.append(f"| {name} | {_mean(acc):.4f}{_sd(acc)} | {_mean(bwt):+.4f}{_sd(bwt)} | "
                     f"{_mean(fwt):+.4f} | {wall:.1f} | {_mean(t):.1f} | {ratio} |")
    lines += ["", "Accuracy matrices (mean over seeds; row: after training that stage):", ""]
    for name, runs in results.items():
        lines += [f"**{name}**", "", "| after \\ on | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for i, stage in enumerate(names):
            row = [_mean([s["matrix"][i][j] for s in runs]) for j in range(len(names))]
            lines.append(f"| {stage} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
        lines.append("")
    lines += goals(results, naive_t)
    return "\n".join(lines) + "\n"


def goals(results: dict[str, list[dict[str, Any]]], naive_t: float | None) -> list[str]:
    out = ["Goals:", ""]
    if "naive" in results and naive_t:
        naive_bwt = abs(_mean([s["bwt"] for s in results["naive"]]))
        for name in ("replay", "ewc"):
            if name in results:
                bwt = abs(_mean([s["bwt"] for s in results[name]]))
                ratio = _mean([s["train_cpu_seconds"] for s in results[name]]) / naive_t
                met = bwt <= naive_bwt / 2 and ratio <= 1.3
                share = f"{bwt / naive_bwt:.2f}x" if naive_bwt > 0 else "naive forgot nothing"
                out.append(f"- {name}: |BWT| {bwt:.4f} vs naive {naive_bwt:.4f} "
                           f"({share}) at {ratio:.2f}x naive's "
                           f"training CPU time: {'met' if met else 'NOT met'} (goal <= 0.5x at <= 1.3x)")
    if "adapter-per-stage" in results:
        exact = all(s["bwt"] == 0.0 for s in results["adapter-per-stage"])
        out.append(f"- adapter-per-stage: BWT exactly 0 in every seed: {'met' if exact else 'NOT met'}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--train", type=int, default=2000, help="training examples per stage")
    p.add_argument("--dev", type=int, default=500, help="dev examples per stage")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--steps", type=int, help="cap on optimizer steps per stage")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--threads", type=int, default=1, help="torch threads (CPU time: see above)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, each in its own process (CPU seconds stay per run)")
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = run_all(args)
    args.minutes = (time.perf_counter() - t0) / 60
    text = section(results, args)
    print(text)
    if not args.no_write:
        update_benchmarks(text)
        print("updated BENCHMARKS.md")


if __name__ == "__main__":
    main()
