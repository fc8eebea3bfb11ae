"""A decoder as a classifier next to an encoder, at the same budget: SmolLM2-135M-Instruct +
LoRA on SST-2 and on waimai_10k (Chinese), and MiniLM + LoRA on SST-2.

    python bench/decoder_classify.py [--examples 4000] [--batch-size 16] [--lr 1e-3]
                                     [--seed 0] [--no-write]

Every run: the first --examples training rows, one epoch of --batch-size (packed rows),
LoRA r16 / alpha 32 on every Linear with a fresh head, AdamW at --lr with a linear schedule
(6% warmup), max length 64, fp32 on this CPU, torch on the machine's cores. Scored on the
whole dev set (SST-2: its 872 dev sentences; waimai_10k: the 10% stratified hold-out, seed 0).
Real tokens/s: the run's own count of non-padding tokens over its training steps' wall time.
Writes its section into BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, update_benchmarks

TITLE = "## Decoder classifiers: SmolLM2 on SST-2 and waimai_10k next to MiniLM (CPU)"
RUNS = (("SmolLM2-135M-Instruct", "smollm2", "sst2"),
        ("SmolLM2-135M-Instruct", "smollm2", "waimai_10k"),
        ("MiniLM-L6 (all-MiniLM-L6-v2)", "minilm", "sst2"))


def tree(args: argparse.Namespace, model: str, data: str, out: Path) -> dict[str, Any]:
    return {"task": "classification", "model": {"name": model, "max_length": 64},
            "data": {"train": data, "max_train_examples": args.examples},
            "method": {"name": "lora", "r": 16, "alpha": 32, "targets": "all-linear"},
            "train": {"epochs": 1, "batch_size": args.batch_size, "lr": args.lr,
                      "warmup_ratio": 0.06, "seed": args.seed, "eval_batch_size": 64,
                      "checkpoint_every": 1_000_000, "load_best_at_end": False},
            "output_dir": str(out)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = p.parse_args()
    from tunelab.config import validate
    from tunelab.recipes.run import train

    t0, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="bench-deccls-") as tmp:
        for i, (name, model, data) in enumerate(RUNS):
            s = train(validate(tree(args, model, data, Path(tmp) / str(i))), log=lambda _: None)
            dev, before = s["final_dev"], s["initial_dev"]
            rows.append(f"| {name} | {data} | {s['steps']} | {before['accuracy']:.4f} | "
                        f"{dev['accuracy']:.4f} | {dev['macro_f1']:.4f} | "
                        f"{s['train_seconds']:.0f} | {s['tokens_per_s']:.0f} |")
            print(rows[-1], flush=True)
    minutes = (time.perf_counter() - t0) / 60
    cmd = " ".join(["python bench/decoder_classify.py", *sys.argv[1:]])
    text = "\n".join([
        TITLE, "", f"`{cmd}` ({datetime.date.today()}, {minutes:.1f} min; {machine()}).", "",
        f"The first {args.examples:,} training rows of each set, 1 epoch of batch "
        f"{args.batch_size} (packed rows), LoRA r16 / alpha 32 on every Linear with a fresh "
        f"head, AdamW lr {args.lr:g}, linear schedule, max length 64, fp32, seed {args.seed}. "
        "Dev: SST-2's 872 dev sentences; waimai_10k's 1,199-review stratified hold-out (majority "
        "class 0.667). MiniLM's English vocabulary cannot read Chinese (two thirds of its tokens "
        "are [UNK] on waimai_10k), so it has no waimai row.", "",
        "| model | data | steps | dev accuracy before | dev accuracy | dev macro-F1 | train s | "
        "real tokens/s |", "|---|---|---:|---:|---:|---:|---:|---:|", *rows, ""])
    print(text)
    if not args.no_write:
        update_benchmarks(text)


if __name__ == "__main__":
    main()
