"""Acceptance: few-shot SST-2 from a meta-learned adapter initialisation vs from a fresh LoRA.

MiniLM + LoRA (r8, every Linear). `tunelab meta` learns an adapter initialisation by Reptile
(or first-order MAML) over 2-way episodes drawn from source classification sets that do not
include SST-2: AG News (4 topics, so 6 topic pairings, each in either label order) and the
Chinese food-delivery reviews of waimai_10k (sentiment, either label order; `--no-waimai`
leaves them out). It runs once (meta seed 0). Then, for each seed, two ordinary `tunelab train` runs on the same seeded
16-examples-per-class sample of SST-2 train (`data.per_class: 16`): one with
`model.init_adapter` set to the meta-learned adapter, one from a fresh LoRA. Both train the
same optimizer steps with the same batch, learning rate and schedule and are scored once, at
the end, on the full SST-2 dev set (872 sentences): no checkpoint selection, no sweep on dev.

    python bench/meta_fewshot.py [--seeds 0 1 2] [--episodes 100] [--inner-steps 8]
                                 [--steps 50] [--algorithm reptile] [--no-waimai]

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

PER_CLASS, BATCH, LR, MAX_LEN = 16, 16, 1e-3, 64
LORA = ["method.name=lora", "method.r=8", "method.alpha=16", "method.targets=all-linear"]
WAIMAI = "{train: %s, format: csv, columns: {text: review, label: label}}"


def meta_train(args, out: Path) -> dict:
    from tunelab.data import data_dir
    from tunelab.meta.config import load_meta_config
    from tunelab.meta.run import meta

    sources = ["{train: ag_news}"]
    if args.waimai:
        sources.append(WAIMAI % (data_dir() / "waimai_10k" / "waimai_10k.csv"))
    cfg = load_meta_config(None, [
        "model.name=minilm", f"model.max_length={MAX_LEN}", *LORA,
        f"meta.sources=[{', '.join(sources)}]", f"meta.algorithm={args.algorithm}", "meta.n_way=2",
        f"meta.k_shot={args.k_shot}", "meta.query_shot=8", f"meta.episodes={args.episodes}",
        f"meta.inner_steps={args.inner_steps}", f"meta.inner_lr={LR}", "meta.log_every=10",
        "meta.seed=0", f"output_dir={out / 'meta'}"])
    return meta(cfg, overwrite=True, log=lambda line: print(f"  {line}", flush=True))


def fewshot(args, seed: int, init: str | None, out: Path) -> dict:
    from tunelab.config import load_config
    from tunelab.recipes.run import train

    cfg = load_config(None, [
        "model.name=minilm", f"model.max_length={MAX_LEN}", "data.train=sst2",
        f"data.per_class={PER_CLASS}", f"data.split_seed={seed}", *LORA,
        f"train.max_steps={args.steps}", f"train.batch_size={BATCH}", f"train.lr={LR}",
        "train.warmup_ratio=0.06", "train.eval_at_start=false", "train.checkpoint_every=100000",
        f"train.seed={seed}", *([f"model.init_adapter={init}"] if init else []),
        f"output_dir={out / (('meta' if init else 'fresh') + f'-{seed}')}"])
    s = train(cfg, overwrite=True, log=lambda _: None)
    return {"accuracy": s["final_dev"]["accuracy"], "seconds": s["train_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algorithm", choices=["reptile", "fomaml"], default="reptile")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--inner-steps", type=int, default=8)
    p.add_argument("--k-shot", type=int, default=8)
    p.add_argument("--no-waimai", dest="waimai", action="store_false",
                   help="meta-train on AG News alone")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("runs/bench-meta"))
    p.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = p.parse_args()
    t0 = time.perf_counter()
    summary = meta_train(args, args.out)
    adapter = summary["adapter"]
    results: dict[str, list[dict]] = {"fresh LoRA": [], "meta-learned init": []}
    for seed in args.seeds:
        for name, init in (("fresh LoRA", None), ("meta-learned init", adapter)):
            r = fewshot(args, seed, init, args.out)
            results[name].append(r)
            print(f"{name:17s} seed {seed}: dev accuracy {r['accuracy']:.4f} "
                  f"({r['seconds']:.0f} s)", flush=True)
    mean = {k: statistics.mean(r["accuracy"] for r in v) for k, v in results.items()}
    lines = ["| seed | " + " | ".join(results) + " |", "|" + "---|" * (len(results) + 1)]
    for i, seed in enumerate(args.seeds):
        lines.append(f"| {seed} | " + " | ".join(f"{v[i]['accuracy']:.4f}" for v in results.values())
                     + " |")
    lines.append("| **mean** | " + " | ".join(f"**{mean[k]:.4f}**" for k in results) + " |")
    table = "\n".join(lines)
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nSST-2 dev accuracy (872 sentences), {PER_CLASS} examples per class, mean over seeds "
          + " ".join(map(str, args.seeds)) + f" ({minutes:.1f} min)")
    print(table)
    if args.no_write:
        return
    cmd = (f"python bench/meta_fewshot.py --seeds {' '.join(map(str, args.seeds))} --algorithm "
           f"{args.algorithm} --episodes {args.episodes} --inner-steps {args.inner_steps} "
           f"--k-shot {args.k_shot} --steps {args.steps}" + ("" if args.waimai else " --no-waimai"))
    sources = ("AG News (train_subset.tsv, topic pairs) and waimai_10k (Chinese review sentiment)"
               if args.waimai else "AG News alone (train_subset.tsv, topic pairs)")
    update_benchmarks(
        f"## Few-shot SST-2 from a meta-learned adapter initialisation"
        f"{'' if args.waimai else ', AG News sources only'} ({device_name()})\n\n"
        f"`{cmd}` ({date.today()}, {minutes:.1f} min; {machine()}).\n\n"
        f"MiniLM + LoRA r8 on every Linear, max length {MAX_LEN}. Meta-training (`tunelab meta`, "
        f"once, seed 0, {summary['seconds'] / 60:.1f} min): {args.algorithm}, {args.episodes} "
        f"2-way episodes of {args.k_shot} support + 8 query examples per class from {sources}, "
        f"classes in a random order per episode, {args.inner_steps} inner AdamW steps at lr {LR}, "
        "the head reset to zero every episode; SST-2 is held out. Post-adaptation query loss: "
        f"{summary['query_loss_first']:.4f} (first {summary['window']} episodes) -> "
        f"{summary['query_loss_last']:.4f} (last {summary['window']}). Few-shot runs: a seeded "
        f"{PER_CLASS} examples per class of SST-2 train (`data.per_class`, one sample per seed, "
        f"the same for both columns), {args.steps} optimizer steps of {BATCH}, lr {LR}, linear "
        "schedule, 6% warmup; SST-2 dev accuracy (872 sentences) of the final weights, no "
        "selection on dev. `meta-learned init`: `model.init_adapter` = the meta-learned adapter "
        "(its head is zero); `fresh LoRA`: the usual LoRA init (B = 0) and a fresh head.\n\n"
        + table + "\n")


if __name__ == "__main__":
    main()
