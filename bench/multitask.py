"""Benchmark: one multitask run vs each task trained alone, MiniLM + LoRA.

Tasks: SST-2 sentiment, AG News topics (two classification tasks) and CoNLL-2003 NER, on
training subsets. The multitask run shares MiniLM and one LoRA adapter (r16 on every Linear)
across the tasks, with a head per task, proportional sampling and one epoch: each training
example is seen once, in batches of one task. Each single-task run trains the same LoRA on
the same subset of its task for one epoch, so it sees the same examples in the same number
of steps of the same batch size. All runs: same seed, lr, schedule, fp32; scored once at the
end on the dev split (accuracy; entity F1 for NER). Writes a section into BENCHMARKS.md.

    python bench/multitask.py [--sst2 N] [--ag-news N] [--conll N] [--dev N] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, machine, peak_rss_mb, update_benchmarks  # noqa: E402

R, ALPHA, LR, BATCH, MAX_LEN, SEED = 16, 32, 2e-3, 32, 128, 0
METRIC = {"sst2": "accuracy", "ag_news": "accuracy", "conll": "f1"}


def task_parts(args) -> dict[str, dict]:
    return {
        "sst2": {"task": "classification", "data": {
            "train": "sst2", "max_train_examples": args.sst2, "max_eval_examples": args.dev}},
        "ag_news": {"task": "classification", "data": {
            "train": "ag_news", "max_train_examples": args.ag_news, "max_eval_examples": args.dev}},
        "conll": {"task": "token_classification", "data": {
            "train": "conll2003", "max_train_examples": args.conll, "max_eval_examples": args.dev}},
    }


def common(out: Path, lr: float) -> dict:
    return {"model": {"name": "minilm", "max_length": MAX_LEN},
            "method": {"name": "lora", "r": R, "alpha": ALPHA, "targets": "all-linear"},
            "train": {"epochs": 1, "batch_size": BATCH, "lr": lr, "schedule": "linear",
                      "warmup_ratio": 0.06, "precision": "fp32", "seed": SEED,
                      "eval_at_start": False, "load_best_at_end": False,
                      "checkpoint_every": 100000},
            "output_dir": str(out)}


def run(tree: dict, log) -> dict:
    from tunelab.config import validate
    from tunelab.recipes.run import train

    t0 = time.perf_counter()
    summary = train(validate(tree), overwrite=True, log=log)
    summary["wall"] = time.perf_counter() - t0
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sst2", type=int, default=4000, help="SST-2 training examples")
    p.add_argument("--ag-news", type=int, default=2000, help="AG News training examples")
    p.add_argument("--conll", type=int, default=2500, help="CoNLL-2003 training sentences")
    p.add_argument("--dev", type=int, default=1000, help="dev examples per task (at most)")
    p.add_argument("--sampling", default="proportional")
    p.add_argument("--lr", type=float, default=LR, help="learning rate of every run")
    p.add_argument("--adapter", default="shared", choices=["shared", "per_task"])
    p.add_argument("--work", default="/tmp/tunelab-bench-multitask")
    p.add_argument("--no-write", action="store_true", help="print the table; leave BENCHMARKS.md")
    args = p.parse_args()
    work = Path(args.work)
    parts = task_parts(args)

    print("multitask run ...", flush=True)
    multi = run({**common(work / "multi", args.lr), "task": "multitask", "tasks": parts,
                 "sampling": args.sampling, "adapter": args.adapter}, print)
    alone = {}
    for name, part in parts.items():
        print(f"{name} alone ...", flush=True)
        alone[name] = run({**common(work / name, args.lr), **part}, lambda _: None)
        print(f"  {name} alone: {alone[name]['final_dev']}", flush=True)

    from tunelab.recipes.multitask import task_scores

    final = multi["final_dev"]
    shared = "one LoRA adapter" if args.adapter == "shared" else \
        "its frozen weights (a LoRA adapter per task)"
    lines = [f"## Multitask: MiniLM + LoRA on SST-2 + AG News + CoNLL-2003 vs each task alone "
             f"({device_name()}{', an adapter per task' if args.adapter == 'per_task' else ''})",
             "",
             f"Measured {date.today()} on {machine()}; fp32. Training subsets: {args.sst2} SST-2, "
             f"{args.ag_news} AG News (train_subset.tsv, 10% held out as dev), {args.conll} "
             f"CoNLL-2003 sentences (seeded samples); dev scores on at most {args.dev} dev examples "
             f"per task (SST-2 dev has 872; CoNLL-2003 valid.txt 3,250). LoRA r{R}/alpha "
             f"{ALPHA} on every Linear, lr {args.lr:g}, batch {BATCH}, linear schedule, warmup 6%, seed {SEED}, max length {MAX_LEN}. The "
             f"multitask run shares MiniLM and {shared}, with a head per task, "
             f"`sampling: {args.sampling}`, one epoch (every example once, each batch from "
             "one task); each task alone trains on the same subset for one epoch: the same "
             "examples, batches and steps of that task. The multitask run's schedule spans its "
             "total steps; each single run's its own. Scores: dev accuracy, entity F1 for NER "
             "(seqeval), last weights, no selection."
             + (f" OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}."
                if os.environ.get("OMP_NUM_THREADS") else ""), "",
             "| task | metric | multitask | alone | multitask - alone (points) | steps alone | "
             "train time alone (s) |",
             "|---|---|---|---|---|---|---|"]
    gaps = {}
    for name in parts:
        m = task_scores(final, name)[METRIC[name]]
        a = alone[name]["final_dev"][METRIC[name]]
        gaps[name] = 100 * (m - a)
        lines.append(f"| {name} | dev {'entity F1' if name == 'conll' else 'accuracy'} | "
                     f"{m:.4f} | {a:.4f} | {gaps[name]:+.2f} | {alone[name]['steps']} | "
                     f"{alone[name]['train_seconds']:.0f} |")
    single_time = sum(a["train_seconds"] for a in alone.values())
    lines += ["", f"Multitask: {multi['steps']} steps, {multi['train_seconds']:.0f} s of training "
              f"steps, {multi['wall']:.0f} s wall, {multi['trainable']:,} trainable parameters "
              f"({'one adapter' if args.adapter == 'shared' else 'an adapter per task'}, "
              "three heads); the three single runs: "
              f"{sum(a['steps'] for a in alone.values())} steps, {single_time:.0f} s, three "
              f"adapters of {next(iter(alone.values()))['trainable']:,}-odd parameters each. "
              f"Peak RSS of the benchmark process: {peak_rss_mb():.0f} MB.", "",
              "Within 1 point of the task alone: " + ", ".join(
                  f"{k} {'yes' if abs(g) <= 1.0 or g > 0 else 'no'} ({g:+.2f})"
                  for k, g in gaps.items()) + ".", "",
              "Command: `" + (f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
                              if os.environ.get("OMP_NUM_THREADS") else "")
              + "python bench/multitask.py" + "".join(
                  f" --{k.replace('_', '-')} {getattr(args, k)}"
                  for k, d in (("sst2", 4000), ("ag_news", 2000), ("conll", 2500), ("dev", 1000),
                               ("sampling", "proportional"), ("adapter", "shared"), ("lr", LR))
                  if getattr(args, k) != d) + "`."]
    section = "\n".join(lines) + "\n"
    if not args.no_write:
        update_benchmarks(section)
    print(section)


if __name__ == "__main__":
    main()
