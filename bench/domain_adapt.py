"""Acceptance: domain-adaptive MLM on SST-2 text, then LoRA on 1,000 labelled SST-2 examples.

Stage 1 (once): masked-LM continued pretraining of all-MiniLM-L6-v2 on the SST-2 training
sentences with their labels ignored (task masked_lm, data.path sst2), for a fixed number of
steps; held-out MLM loss is measured on the SST-2 dev sentences (never trained on) before and
after. MiniLM has no MLM head: tunelab initialises one (see tunelab/models/mlm.py).
Stage 2 (per seed): LoRA classification on a fixed seeded 1,000-example subset of SST-2 train
(data.max_train_examples, split_seed 0: the same subset for every run), once from the MLM run
(`model.name: <its run dir>`) and once from the original MiniLM, with the same settings and
training seed; dev accuracy on all 872 SST-2 dev examples. Writes a section into BENCHMARKS.md.

    python bench/domain_adapt.py [--mlm-steps 400] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, machine, update_benchmarks  # noqa: E402

MAX_LEN, BATCH = 64, 32


def mlm_config(args, out: Path):
    from tunelab.config import load_config
    from tunelab.data.catalog import catalog_path

    dev = catalog_path("sst2/dev.tsv")  # held-out sentences: never trained on
    method = ["method.name=full"] if args.mlm_method == "full" else [
        "method.name=lora", "method.r=16", "method.alpha=32"]
    return load_config(None, [
        "task=masked_lm", "model.name=minilm", f"model.max_length={MAX_LEN}", "data.path=sst2",
        f"data.eval_path={dev}", "data.text_column=sentence", *method,
        f"train.max_steps={args.mlm_steps}", f"train.batch_size={args.mlm_batch}",
        f"train.lr={args.mlm_lr}", "train.warmup_ratio=0.06", "train.checkpoint_every=100000",
        "train.seed=0", "train.precision=fp32", f"output_dir={out}"])


def lora_config(args, model: str, seed: int, out: Path):
    from tunelab.config import load_config

    return load_config(None, [
        f"model.name={model}", f"model.max_length={MAX_LEN}", "data.train=sst2",
        f"data.max_train_examples={args.examples}", "data.split_seed=0", "method.name=lora",
        "method.r=8", "method.alpha=16", f"train.epochs={args.epochs}",
        f"train.batch_size={BATCH}", f"train.lr={args.lr}", "train.warmup_ratio=0.06",
        "train.eval_at_start=false", "train.checkpoint_every=100000", f"train.seed={seed}",
        "train.precision=fp32", f"output_dir={out}"])


def run(cfg) -> dict:
    from tunelab.recipes.run import train

    return train(cfg, overwrite=True, log=lambda line: None)


def section(args, mlm: dict, rows: list[tuple[int, float, float]]) -> str:
    before, after = mlm["initial_dev"], mlm["final_dev"]
    base = [r[1] for r in rows]
    adapted = [r[2] for r in rows]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    method = "full fine-tuning" if args.mlm_method == "full" else "LoRA r16/alpha 32 (all linear)"
    lines = [f"## Domain-adaptive MLM: MiniLM on SST-2 text, then LoRA on 1,000 examples ({device_name()})",
             "",
             f"Measured {date.today()} on {machine()}. Stage 1: masked-LM continued pretraining "
             f"of all-MiniLM-L6-v2 ({method}, MLM head initialised by tunelab: tied to the input "
             f"embeddings, unigram-prior output bias) on the SST-2 training sentences with "
             f"labels ignored: {mlm['steps']} steps of batch {args.mlm_batch} "
             f"({mlm['steps'] * args.mlm_batch:,} texts of 67,349, max length {MAX_LEN}), lr "
             f"{args.mlm_lr}, linear schedule, warmup 6%, 15% of tokens masked (80/10/10), seed 0, "
             f"{mlm['train_seconds']:.0f} s of training. Held-out masked-token loss on the 872 "
             f"SST-2 dev sentences (fixed masks): {before['loss']:.4f} -> {after['loss']:.4f} "
             f"(perplexity {before['perplexity']:.1f} -> {after['perplexity']:.1f}, masked-token "
             f"accuracy {before['masked_accuracy']:.4f} -> {after['masked_accuracy']:.4f}). "
             f"Stage 2: LoRA r8/alpha 16 on all linear layers, on the same seeded "
             f"{args.examples:,}-example SST-2 training subset (split_seed 0), {args.epochs:g} "
             f"epochs, batch {BATCH}, lr {args.lr}, linear schedule, warmup 6%, max length "
             f"{MAX_LEN}, last weights; once from the MLM run (`model.name: <run dir>`) and once "
             "from the original MiniLM, same training seed. Dev accuracy on all 872 SST-2 dev "
             "examples.", "",
             "| training seed | LoRA from MiniLM | LoRA from MiniLM + SST-2 MLM | difference |",
             "|---|---|---|---|"]
    for seed, b, a in rows:
        lines.append(f"| {seed} | {b:.4f} | {a:.4f} | {a - b:+.4f} |")
    lines.append(f"| mean | {mean(base):.4f} | {mean(adapted):.4f} | "
                 f"{mean(adapted) - mean(base):+.4f} |")
    lines += ["", f"Command: `python bench/domain_adapt.py --mlm-steps {args.mlm_steps} "
              f"--mlm-method {args.mlm_method} --mlm-lr {args.mlm_lr} --mlm-batch {args.mlm_batch} "
              f"--examples {args.examples} "
              f"--epochs {args.epochs:g} --lr {args.lr} --seeds {' '.join(map(str, args.seeds))}` "
              "(one thread: `OMP_NUM_THREADS=1`)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mlm-steps", type=int, default=400)
    p.add_argument("--mlm-method", choices=["full", "lora"], default="full")
    p.add_argument("--mlm-lr", type=float, default=1e-4)
    p.add_argument("--mlm-batch", type=int, default=64)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--work", default="/tmp/tunelab-bench-domain")
    p.add_argument("--no-write", action="store_true", help="print the section; leave BENCHMARKS.md")
    args = p.parse_args()
    work = Path(args.work)
    t0 = time.perf_counter()
    print(f"stage 1: MLM on SST-2 text, {args.mlm_steps} steps ...", flush=True)
    mlm = run(mlm_config(args, work / "mlm"))
    print(f"  held-out MLM loss {mlm['initial_dev']['loss']:.4f} -> {mlm['final_dev']['loss']:.4f}, "
          f"perplexity {mlm['initial_dev']['perplexity']:.1f} -> "
          f"{mlm['final_dev']['perplexity']:.1f} ({mlm['train_seconds']:.0f} s)", flush=True)
    rows = []
    for seed in args.seeds:
        accs = []
        for name, model in (("minilm", "minilm"), ("mlm", str(work / "mlm"))):
            s = run(lora_config(args, model, seed, work / f"lora-{name}-{seed}"))
            accs.append(s["final_dev"]["accuracy"])
            print(f"  seed {seed}, LoRA from {name}: dev accuracy {accs[-1]:.4f} "
                  f"({s['train_seconds']:.0f} s)", flush=True)
        rows.append((seed, accs[0], accs[1]))
    text = section(args, mlm, rows)
    if not args.no_write:
        update_benchmarks(text)
    print(text)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
