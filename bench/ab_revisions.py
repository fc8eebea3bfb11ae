"""Benchmark: tunelab at two git revisions, interleaved, on the classify_vs_peft workloads.

A refactor must not slow the training step. This runs `bench/classify_vs_peft.py`'s own
tunelab child (MiniLM on seeded SST-2, LoRA and full fine-tuning) from a worktree of each
revision, alternating base and head run by run so drift on the machine hits both alike, and
writes real tokens/s, dev accuracy and peak RSS per revision to BENCHMARKS.md.

    python bench/ab_revisions.py --base REV [--head REV] [--repeats 3] [--examples 4000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, device_name, machine, update_benchmarks  # noqa: E402


def worktree(rev: str, root: Path) -> Path:
    """A detached checkout of `rev` under `root` (its own tunelab package and bench script)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    path = root / sha
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), sha],
                   check=True, capture_output=True)
    return path


def child(tree: Path, kind: str, seed: int, examples: int, work: Path) -> dict:
    """One training run of `tree`'s tunelab, in its own process."""
    out = work / f"{tree.name}-{kind}-{seed}.json"
    # the worktree lies outside the checkout: name the data folder the checkout would find
    env = {"TUNELAB_DATA_DIR": str(REPO.parent / "shared" / "data"), **os.environ,
           "PYTHONPATH": str(tree)}
    subprocess.run([sys.executable, str(tree / "bench" / "classify_vs_peft.py"), "--child", kind,
                    "--json", str(out), "--seed", str(seed), "--examples", str(examples),
                    "--work", str(work / tree.name)], check=True, env=env, cwd=tree)
    return json.loads(out.read_text())


def row(name: str, runs: list[dict]) -> str:
    tps = [r["tokens"] / r["seconds"] for r in runs]
    acc = [r["accuracy"] for r in runs]
    sd = statistics.stdev(tps) if len(tps) > 1 else float("nan")
    return (f"| {name} | {statistics.mean(tps):.0f} +- {sd:.0f} | "
            f"{', '.join(f'{t:.0f}' for t in tps)} | {statistics.mean(acc):.4f} | "
            f"{max(r['peak_rss_mb'] for r in runs):.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True)
    p.add_argument("--head", default="HEAD")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--examples", type=int, default=4000)
    p.add_argument("--workloads", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunelab-ab-") as tmp:
        root = Path(tmp)
        trees = {"base": worktree(args.base, root), "head": worktree(args.head, root)}
        results: dict[tuple[str, str], list[dict]] = {}
        try:
            for workload in args.workloads:
                for i in range(args.repeats):  # base, head, head, base, ...: no order bias
                    order = ("base", "head") if i % 2 == 0 else ("head", "base")
                    for side in order:
                        r = child(trees[side], f"tunelab-{workload}-fp32", args.seed,
                                  args.examples, root)
                        results.setdefault((workload, side), []).append(r)
                        print(f"{workload} {side} ({trees[side].name}): "
                              f"{r['tokens'] / r['seconds']:.0f} tok/s, acc {r['accuracy']:.4f}",
                              flush=True)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(tree)], capture_output=True)
    names = {side: tree.name for side, tree in trees.items()}
    lines = [f"## tunelab A/B across revisions ({device_name()})", "",
             f"Measured {date.today()} on {machine()}: tunelab's classify_vs_peft child (MiniLM, "
             f"{args.examples} seeded SST-2 examples, fp32, training seed {args.seed}) at "
             f"{names['base']} (base) and {names['head']} (head), {args.repeats} runs each, "
             "interleaved. Real tokens/s: mean +- SD and each run; dev accuracy is the mean "
             "(the same seed: equal accuracy means the same training).", "",
             "| run | real tokens/s | runs | dev accuracy | peak RSS (MB) |", "|---|---|---|---|---|"]
    for workload in args.workloads:
        for side in ("base", "head"):
            lines.append(row(f"{workload} {side} ({names[side]})", results[(workload, side)]))
        ratio = (statistics.mean(r["tokens"] / r["seconds"] for r in results[(workload, "head")])
                 / statistics.mean(r["tokens"] / r["seconds"]
                                   for r in results[(workload, "base")]))
        lines.append(f"| {workload}: head / base | {ratio:.3f}x | | | |")
    lines += ["", f"Command: `python bench/ab_revisions.py --base {names['base']} --head "
              f"{names['head']} --repeats {args.repeats} --examples {args.examples} --workloads "
              f"{' '.join(args.workloads)}`."]
    section = "\n".join(lines) + "\n"
    print(section)
    update_benchmarks(section)


if __name__ == "__main__":
    main()
