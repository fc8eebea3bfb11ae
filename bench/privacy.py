"""DP-SGD against non-private training: MiniLM + LoRA on SST-2 at several privacy budgets,
the same examples seen and the same settings, with time and peak memory per step.

    python bench/privacy.py [--epsilons 1 3 8] [--steps 80] [--batch-size 64] [--accum 8]
                            [--seeds 0] [--lr 5e-3] [--r 8] [--targets all-linear]
                            [--pooling mean|cls] [--dp-optimizer adamw|sgd] [--dp-lr LR]
                            [--head-lr-scale S] [--dp-head-lr-scale S]
                            [--threads 1] [--jobs 1] [--no-write]

Every arm trains LoRA (rank --r, alpha 2r) on --targets of MiniLM (dropout 0: DP-SGD refuses
LoRA dropout) for --steps optimizer steps of batch-size x accum examples (expected size: DP-SGD draws
Poisson batches, each example joining with q = batch x accum / N, on the whole SST-2 training
set), AdamW at --lr, linear schedule, max length 64, scored on all 872 dev examples at the
end. The private arms clip each example's gradient to norm 1 and add the Gaussian noise Opacus
calibrates to spend epsilon by the last step (RDP accountant, delta 1/(2N) rounded down to a
power of ten). Each arm runs in its own process, so peak RSS and CPU seconds are that arm's;
seconds per step are the training loop's wall and CPU time over its steps (model load and
the final dev pass excluded); the step-cost goal (DP at most 2x) is read on CPU time. Writes its
section into BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, peak_rss_mb, update_benchmarks

POOLED = {"mean": "the mean of the last layer over real tokens",
          "cls": "BERT's pooler (dense + tanh over the first token)"}
TITLE = "## Differential privacy: DP-SGD vs non-private, MiniLM + LoRA on SST-2 (CPU)"


def tree(args: argparse.Namespace, epsilon: float | None, seed: int, out: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "task": "classification",
        "model": {"name": "minilm", "max_length": 64, "pooling": args.pooling},
        "data": {"train": "sst2", "packing": False},  # DP-SGD cannot pack: same batches in all
        "method": {"name": "lora", "r": args.r, "alpha": 2 * args.r,
                   "targets": args.targets if args.targets != ["all-linear"] else "all-linear",
                   "dropout": 0.0},
        "train": {"batch_size": args.batch_size, "grad_accum": args.accum, "lr": args.lr,
                  "max_steps": args.steps, "schedule": "linear", "warmup_ratio": 0.06,
                  "seed": seed, "log_every": 10, "checkpoint_every": 1_000_000,
                  "load_best_at_end": False, "head_lr_scale": args.head_lr_scale},
        "output_dir": str(out)}
    if epsilon is not None:
        cfg["privacy"] = {"target_epsilon": epsilon, "max_grad_norm": 1.0}
        if args.dp_optimizer == "sgd":  # see --dp-optimizer
            cfg["train"].update(optimizer="sgd", momentum=0.0)
        if args.dp_lr is not None:
            cfg["train"]["lr"] = args.dp_lr
        if args.dp_head_lr_scale is not None:
            cfg["train"]["head_lr_scale"] = args.dp_head_lr_scale
    return cfg


def run_arm(spec: str) -> None:
    """Child process: train one arm, print its numbers as one JSON line."""
    import torch

    from tunelab.config import validate
    from tunelab.recipes.run import train

    args, epsilon, seed, out = json.loads(spec)
    ns = argparse.Namespace(**args)
    torch.set_num_threads(ns.threads)
    c0 = time.process_time()
    summary = train(validate(tree(ns, epsilon, seed, Path(out))), log=lambda _: None)
    private = summary.get("privacy") or {}
    print(json.dumps({"accuracy": summary["final_dev"]["accuracy"], "steps": summary["steps"],
                      "loop_s": summary["train_seconds"], "cpu_s": time.process_time() - c0,
                      "loop_cpu_s": summary["train_cpu_seconds"],
                      "epsilon": private.get("epsilon"),
                      "sigma": private.get("noise_multiplier"), "delta": private.get("delta"),
                      "peak_rss_mb": peak_rss_mb()}))


def arm(args: argparse.Namespace, epsilon: float | None, seed: int, tmp: Path) -> dict[str, Any]:
    out = tmp / f"eps-{epsilon}-seed-{seed}"
    spec = json.dumps([vars(args), epsilon, seed, str(out)])
    done = subprocess.run([sys.executable, __file__, "--arm", spec], check=True,
                          capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"epsilon {epsilon} seed {seed}: {result}", flush=True)
    return result


def goals(results: dict[float | None, list[dict[str, Any]]], base_acc: float,
          base_cpu: float) -> str:
    """The issue's two DP goals, read off this run: epsilon 8 within 5 points of
    non-private dev accuracy, and a DP step at most 2x a non-private one (CPU time)."""
    out = ["Goals:", ""]
    if 8.0 in results:
        gap = 100 * (base_acc - statistics.mean(r["accuracy"] for r in results[8.0]))
        out.append(f"- epsilon 8 within 5 points of non-private: {gap:.2f} points below: "
                   f"{'met' if gap <= 5 else 'NOT met'}")
    worst = max(statistics.mean(r["loop_cpu_s"] / r["steps"] for r in rs) / base_cpu
                for eps, rs in results.items() if eps is not None)
    out.append(f"- a DP step at most 2x a non-private step (CPU seconds): {worst:.2f}x at "
               f"most: {'met' if worst <= 2 else 'NOT met'}")
    return "\n".join(out)


def private_optimizer(args: argparse.Namespace) -> str:
    """The head's rate, and how the private arms' optimizer differs from the non-private
    arm's, in words."""
    head = (f", the head at lr x {args.head_lr_scale:g} (train.head_lr_scale)"
            if args.head_lr_scale != 1 else "")
    private = []
    if args.dp_optimizer == "sgd":
        private.append(f"SGD without momentum, lr {args.dp_lr or args.lr:g}")
    elif args.dp_lr is not None:
        private.append(f"lr {args.dp_lr:g}")
    if args.dp_head_lr_scale is not None:
        private.append(f"the head at lr x {args.dp_head_lr_scale:g}")
    return head + (f" (private arms: {', '.join(private)})" if private else "")


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.4f}" + (f" +- {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--accum", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--dp-optimizer", choices=["adamw", "sgd"], default="adamw",
                   help="the private arms' optimizer. Adam scales every coordinate's step to "
                        "about lr, so the LoRA weights, whose gradient is almost all noise "
                        "early on, random-walk at lr per step; SGD moves them by lr x the "
                        "noise (sigma C / B per coordinate)")
    p.add_argument("--dp-lr", type=float, default=None, help="the private arms' lr (default --lr)")
    p.add_argument("--head-lr-scale", type=float, default=1.0,
                   help="train.head_lr_scale in every arm: the head trains at lr x this")
    p.add_argument("--dp-head-lr-scale", type=float, default=None,
                   help="the private arms' train.head_lr_scale (default --head-lr-scale)")
    p.add_argument("--r", type=int, default=8, help="LoRA rank (alpha 2r)")
    p.add_argument("--targets", nargs="+", default=["all-linear"],
                   help="LoRA targets: all-linear, or module names such as query value")
    p.add_argument("--pooling", choices=["cls", "mean"], default="mean",
                   help="model.pooling in every arm: mean (what MiniLM was trained for) or "
                        "cls (BERT's pooler over the first token)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--jobs", type=int, default=1, help="arms run at once (CPU time is per arm)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per arm")
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        return run_arm(args.arm)
    import torch

    torch.set_num_threads(args.threads)  # the arms' count, which machine() reports
    arms: list[float | None] = [None, *args.epsilons]
    t0 = time.perf_counter()
    results: dict[float | None, list[dict[str, Any]]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp, \
            ThreadPoolExecutor(args.jobs) as pool:
        runs = [(eps, pool.submit(arm, args, eps, seed, Path(tmp)))
                for seed in args.seeds for eps in arms]
        for eps, job in runs:
            results[eps].append(job.result())
    minutes = (time.perf_counter() - t0) / 60
    base_acc = statistics.mean(r["accuracy"] for r in results[None])
    base_step = statistics.mean(r["loop_s"] / r["steps"] for r in results[None])
    base_cpu = statistics.mean(r["loop_cpu_s"] / r["steps"] for r in results[None])
    header = ("| privacy | noise multiplier | epsilon spent (delta) | dev accuracy | gap to "
              "non-private (points) | s / step (wall) | x non-private (wall) | CPU s / step | "
              "x non-private (CPU) | peak RSS (MB) |")
    rows = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for eps in arms:
        rs = results[eps]
        acc = [r["accuracy"] for r in rs]
        step = statistics.mean(r["loop_s"] / r["steps"] for r in rs)
        cpu = statistics.mean(r["loop_cpu_s"] / r["steps"] for r in rs)
        name = "non-private" if eps is None else f"target epsilon {eps:g}"
        sigma = "-" if eps is None else f"{rs[0]['sigma']:.3f}"
        spent = "-" if eps is None else f"{rs[0]['epsilon']:.3f} ({rs[0]['delta']:g})"
        rows.append(f"| {name} | {sigma} | {spent} | {spread(acc)} | "
                    f"{100 * (statistics.mean(acc) - base_acc):+.2f} | {step:.2f} | "
                    f"{step / base_step:.2f} | {cpu:.2f} | {cpu / base_cpu:.2f} | {max(r['peak_rss_mb'] for r in rs):.0f} |")
    table = "\n".join(rows) + "\n\n" + goals(results, base_acc, base_cpu)
    print(table)
    if args.no_write:
        return
    cmd = " ".join(["python bench/privacy.py", *sys.argv[1:]])
    examples = args.steps * args.batch_size * args.accum
    update_benchmarks(
        f"{TITLE}\n\n`{cmd}` ({datetime.date.today()}, {minutes:.1f} min; {machine()}).\n\n"
        f"All 67,349 SST-2 training examples, {args.steps} steps of {args.batch_size} x "
        f"{args.accum} = {args.batch_size * args.accum} examples (expected size for DP-SGD's "
        f"Poisson batches), {examples:,} examples seen in every arm; LoRA r{args.r} alpha "
        f"{2 * args.r} on {' / '.join(args.targets)}, dropout 0, the head on "
        f"{POOLED[args.pooling]} (model.pooling: {args.pooling}), AdamW lr {args.lr:g}"
        f"{private_optimizer(args)}, linear schedule with 6% warmup, max length "
        f"64, unpacked batches in every arm (DP-SGD cannot pack, so the non-private arm does "
        f"not either), each micro-batch of similar lengths (the non-private arm's length "
        f"buckets; DP-SGD sorts each Poisson sample by length before splitting it); seeds {', '.join(map(str, args.seeds))} (mean +- stdev where more than one); "
        "dev accuracy on all 872 SST-2 dev examples. Private arms: per-example clipping to "
        "norm 1, Gaussian noise calibrated by Opacus (RDP accountant) to spend the target by "
        "the last step; the guarantee is example-level on the training set. Seconds per step: "
        "the training loop's wall time over its steps; CPU: the arm process's CPU seconds in "
        "the training steps (model load and the final dev pass excluded), "
        f"torch on {args.threads} thread(s): wall time moves with other jobs on the machine, "
        "CPU time barely; peak RSS of the arm's own process.\n\n"
        + table + "\n")


if __name__ == "__main__":
    main()
