"""Acceptance: low-data SST-2 with and without data augmentation (data.augment).

MiniLM + LoRA (r8, every Linear) on a seeded 200-example sample of SST-2 train, scored on the
full SST-2 dev set (872 sentences). Each seed draws its own sample (data.split_seed), training
order and augmentation (train.seed, data.augment.seed). Every variant trains the same number of
optimizer steps with the same batch, learning rate and schedule, and is scored once, at the
end (no checkpoint selection on dev). The variants differ only in data.augment:

- none: the 200 originals
- eda: the originals + `copies` EDA copies each (synonym replacement, random insertion, random
  swap, random deletion at 0.1 per word, one operation per copy), drawn anew each epoch
- eda+mask: as eda, with random masking (0.1 per word) as a fifth operation

    python bench/augment_lowdata.py [--examples 200] [--seeds 0 1 2] [--steps 250] [--copies 4]
                                    [--variants none eda eda+mask]

Writes its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, machine, update_benchmarks  # noqa: E402

BATCH, LR, MAX_LEN = 16, 1e-3, 64
EDA = ["data.augment.ops.synonym_replacement=0.1", "data.augment.ops.random_insertion=0.1",
       "data.augment.ops.random_swap=0.1", "data.augment.ops.random_deletion=0.1"]


def variants(copies: int) -> dict[str, list[str]]:
    eda = [f"data.augment.copies={copies}", *EDA]
    return {"none": [], "eda": [*eda, "data.augment.ops.mask=0.0"],
            "eda+mask": [*eda, "data.augment.ops.mask=0.1"]}


def run(args, name: str, extra: list[str], seed: int, out: Path) -> dict:
    from tunelab.config import load_config
    from tunelab.recipes.run import train

    aug_seed = [f"data.augment.seed={seed}"] if extra else []
    cfg = load_config(None, [
        "model.name=minilm", f"model.max_length={MAX_LEN}", "data.train=sst2",
        f"data.max_train_examples={args.examples}", f"data.split_seed={seed}",
        "method.name=lora", "method.r=8", "method.alpha=16", "method.targets=all-linear",
        f"train.max_steps={args.steps}", f"train.batch_size={BATCH}", f"train.lr={LR}",
        "train.warmup_ratio=0.06", "train.eval_at_start=false", "train.checkpoint_every=100000",
        f"train.seed={seed}", *extra, *aug_seed, f"output_dir={out / f'{name}-{seed}'}"])
    logs: list[str] = []
    s = train(cfg, overwrite=True, log=logs.append)
    rows = next((x for x in logs if "training rows per epoch" in x), "")
    for line in logs:
        if line.startswith("augment:"):
            print(f"  {line}", flush=True)
    return {"accuracy": s["final_dev"]["accuracy"], "seconds": s["train_seconds"],
            "rows": rows.split("= ")[-1].split(" training")[0] if rows else str(args.examples)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--variants", nargs="+", default=["none", "eda"],
                   choices=["none", "eda", "eda+mask"])
    p.add_argument("--out", type=Path, default=Path("runs/bench-augment"))
    p.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = p.parse_args()
    t0 = time.perf_counter()
    results: dict[str, list[dict]] = {}
    for name, extra in variants(args.copies).items():
        if name not in args.variants:
            continue
        for seed in args.seeds:
            r = run(args, name, extra, seed, args.out)
            results.setdefault(name, []).append(r)
            print(f"{name:9s} seed {seed}: dev accuracy {r['accuracy']:.4f} "
                  f"({r['rows']} rows/epoch, {r['seconds']:.0f} s)", flush=True)
    mean = {k: statistics.mean(r["accuracy"] for r in v) for k, v in results.items()}
    header = "| seed | " + " | ".join(results) + " |"
    lines = [header, "|" + "---|" * (len(results) + 1)]
    for i, seed in enumerate(args.seeds):
        lines.append(f"| {seed} | " + " | ".join(f"{v[i]['accuracy']:.4f}" for v in results.values())
                     + " |")
    lines.append("| **mean** | " + " | ".join(f"**{mean[k]:.4f}**" for k in results) + " |")
    table = "\n".join(lines)
    print("\nSST-2 dev accuracy (872 sentences), mean over seeds " + " ".join(map(str, args.seeds)))
    print("  ".join(f"{k}: {v:.4f}" for k, v in mean.items()))
    print(table)
    if args.no_write:
        return
    cmd = (f"python bench/augment_lowdata.py --examples {args.examples} --seeds "
           f"{' '.join(map(str, args.seeds))} --steps {args.steps} --copies {args.copies} "
           f"--variants {' '.join(args.variants)}")
    rows = ", ".join(f"{k}: {v[0]['rows']}" for k, v in results.items())
    update_benchmarks(
        f"## Low-data SST-2 with augmentation ({device_name()})\n\n"
        f"`{cmd}` ({date.today()}, {(time.perf_counter() - t0) / 60:.1f} min; {machine()}).\n\n"
        f"MiniLM + LoRA r8 on every Linear, a seeded {args.examples}-example sample of SST-2 train "
        f"(one per seed), {args.steps} optimizer steps of {BATCH}, lr {LR}, linear schedule, "
        f"max length {MAX_LEN}; SST-2 dev accuracy (872 sentences) of the final weights. "
        f"Training rows per epoch: {rows}. `eda`: {args.copies} copies per example, one of "
        "synonym replacement / random insertion / random swap / random deletion per copy at "
        "0.1 per word, synonyms from MiniLM's input-embedding neighbours, new copies each "
        "epoch" + ("; `eda+mask` adds masking at 0.1 per word as a fifth operation"
                  if "eda+mask" in results else "") + ".\n\n" + table + "\n")


if __name__ == "__main__":
    main()
