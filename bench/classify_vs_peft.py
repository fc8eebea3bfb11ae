"""Benchmark: tunelab vs peft + transformers.Trainer, MiniLM on SST-2 (LoRA and full).

Workloads (a) LoRA r8 on query/value and (b) full fine-tuning of all-MiniLM-L6-v2, on the
same seeded 4,000-example SST-2 sample, max length 64, batch 32, one epoch, the same
learning rate, schedule and training seed. Both draw random batches; the reference pads each
to its longest example (DataCollatorWithPadding), tunelab packs it into rows without padding
(its default for this model, `data.packing`); both are scored on the full SST-2 dev set. Each run is its
own process, one after another; every configuration runs once per training seed and the
table gives the mean (accuracy with its range: one seed's accuracy moves by a point).
Writes a table into BENCHMARKS.md.

    python bench/classify_vs_peft.py [--examples 4000] [--seeds 0 1 2] [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, machine, matmul_peak_gflops, peak_rss_mb, update_benchmarks  # noqa: E402

# LoRA at 1e-3: at 5e-4 the 125 steps end on the starting plateau and accuracy is seed luck
# (BENCHMARKS.md, "Length bucketing and accuracy")
WORKLOADS = {"lora": {"lr": 1e-3, "targets": ["query", "value"]}, "full": {"lr": 5e-5}}
PRECISIONS = ("fp32", "bf16")
RUNS = [f"{tool}-{w}-{p}" for w in WORKLOADS for p in PRECISIONS for tool in ("tunelab", "reference")]
BATCH, MAX_LEN, WARMUP = 32, 64, 0.06


def tunelab_config(args, workload: str, out: Path):
    from tunelab.config import load_config

    w = WORKLOADS[workload]
    lr = lr_of(args, workload)
    method = (["method.name=lora", "method.r=8", "method.alpha=16",
               f"method.targets=[{','.join(w['targets'])}]"] if workload == "lora"
              else ["method.name=full"])
    return load_config(None, [
        "model.name=minilm", f"model.max_length={MAX_LEN}", "data.train=sst2",
        f"data.max_train_examples={args.examples}", *method, "train.epochs=1",
        f"train.batch_size={BATCH}", f"train.lr={lr}", f"train.warmup_ratio={WARMUP}",
        "train.eval_at_start=false", "train.checkpoint_every=100000", f"train.seed={args.seed}",
        f"train.precision={args.precision}",  # the reference runs at the same precision
        f"output_dir={out}"])


def child_tunelab(args, workload: str, out: Path) -> dict:
    from tunelab.recipes.run import train

    s = train(tunelab_config(args, workload, out), overwrite=True, log=lambda _: None)
    return {"tokens": s["tokens_per_s"] * s["train_seconds"], "seconds": s["train_seconds"],
            "examples": args.examples, "accuracy": s["final_dev"]["accuracy"],
            "trainable": s["trainable"], "wall": s["wall_seconds"]}


def child_reference(args, workload: str, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                              DataCollatorWithPadding, Trainer, TrainingArguments)

    from tunelab.data import load_splits
    from tunelab.runs.resolve import resolve

    t_start = time.perf_counter()
    cfg = tunelab_config(args, workload, out)
    splits = load_splits(cfg.data)  # the same seeded sample tunelab trains on
    path = resolve("minilm")
    tok = AutoTokenizer.from_pretrained(str(path))
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)
    if workload == "lora":
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16,
                                                 lora_dropout=0.0,
                                                 target_modules=WORKLOADS["lora"]["targets"]))
    enc = tok([e.text for e in splits.train], truncation=True, max_length=MAX_LEN)
    train_ds = Dataset.from_dict({"input_ids": enc["input_ids"],
                                  "attention_mask": enc["attention_mask"],
                                  "labels": [int(e.label) for e in splits.train]})
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=BATCH,
                              num_train_epochs=1, learning_rate=lr_of(args, workload),
                              lr_scheduler_type="linear", warmup_steps=WARMUP, weight_decay=0.01,
                              max_grad_norm=1.0, seed=args.seed, logging_steps=50, save_strategy="no",
                              report_to=[], use_cpu=not torch.cuda.is_available(),
                              bf16=args.precision == "bf16",  # autocast, fp32 master weights
                              dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds,
                      data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.eval()
    dev = tok([e.text for e in splits.dev], truncation=True, max_length=128, padding=True,
              return_tensors="pt")
    dev = dev.to(model.device)
    with torch.no_grad():
        preds = torch.cat([model(input_ids=dev["input_ids"][i:i + 64],
                                 attention_mask=dev["attention_mask"][i:i + 64]).logits.argmax(-1)
                           for i in range(0, len(splits.dev), 64)]).cpu()
    gold = torch.tensor([int(e.label) for e in splits.dev])
    return {"tokens": sum(map(len, enc["input_ids"])), "seconds": seconds,
            "examples": args.examples, "accuracy": (preds == gold).float().mean().item(),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "wall": time.perf_counter() - t_start}


def lr_of(args, workload: str) -> float:
    return args.lr_lora if workload == "lora" else args.lr_full


def flops_per_token(workload: str) -> float:
    """Training FLOPs per token for the 6-layer, hidden-384 encoder (matmuls only): 6N for full
    fine-tuning; 4N when the base is frozen (no weight gradients), LoRA's own work ignored."""
    n = 6 * (4 * 384 * 384 + 2 * 384 * 1536)  # non-embedding weights in the layers
    return (6 if workload == "full" else 4) * n


def child(kind: str, args) -> None:
    tool, workload, args.precision = kind.split("-")
    out = Path(args.work) / kind
    result = (child_tunelab if tool == "tunelab" else child_reference)(args, workload, out)
    result["peak_rss_mb"] = peak_rss_mb()
    Path(args.json).write_text(json.dumps(result))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(args, results: dict, peak: float) -> str:
    """results[kind] is a list of per-seed results."""
    only = "" if len(args.workloads) == len(WORKLOADS) else f", {' and '.join(args.workloads)} only"
    lines = [f"## MiniLM on SST-2{only}: tunelab vs peft + transformers.Trainer ({device_name()})", "",
             f"Measured {date.today()} on {machine()}; fp32 matmul peak measured in the same "
             f"run: {peak:.1f} GFLOP/s. Each tool runs at each precision in "
             f"{', '.join(args.precisions)} (bf16: autocast with fp32 master weights, "
             "`train.precision: bf16` in tunelab, `bf16=True` in the Trainer); a ratio compares runs "
             "at the same precision; MFU is always against the fp32 peak."
             f" {args.examples} seeded SST-2 training examples (the same "
             f"for every run), max length {MAX_LEN}, batch {BATCH}, 1 epoch, linear schedule, "
             f"warmup {WARMUP:.0%}; training seeds {', '.join(map(str, args.seeds))}, one run per "
             "seed and tool, figures are means over seeds. Both draw random batches: the "
             "reference pads each to its longest example, tunelab packs it into rows with "
             "attention kept within each example (its default here, `data.packing`). "
             + "; ".join({"lora": f"(a) LoRA r8/alpha 16 on query and value, lr {args.lr_lora:g}",
                          "full": f"(b) full fine-tuning, lr {args.lr_full:g}"}[w]
                         for w in args.workloads)
             + ". Real tokens exclude padding; MFU "
             "counts matmul FLOPs per real token (6N full, 4N frozen base) against the measured "
             "peak (MFU/peak: how far each figure is from it); these are the model's FLOPs, and "
             "tunelab skips some of them (the last layer finishes only the first token, which is "
             "all the classifier reads), so its MFU is the model's rate, not the chip's. Dev "
             "accuracy on all 872 SST-2 dev "
             "examples: mean, and [lowest, highest] over seeds.",
             "", "| workload | precision | run | real tokens/s | examples/s | vs reference | MFU | peak RSS (MB) | train time (s) | wall (s) | dev accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for workload, precision in ((w, p) for w in args.workloads for p in args.precisions):
        ref_tps = mean([r["tokens"] / r["seconds"]
                        for r in results[f"reference-{workload}-{precision}"]])
        for tool in ("tunelab", "reference"):
            runs = results[f"{tool}-{workload}-{precision}"]
            tps = mean([r["tokens"] / r["seconds"] for r in runs])
            acc = [r["accuracy"] for r in runs]
            mfu = tps * flops_per_token(workload) / (peak * 1e9)
            lines.append(f"| ({'a' if workload == 'lora' else 'b'}) {workload} | {precision} | "
                         f"{tool} | {tps:.0f} | "
                         f"{mean([r['examples'] / r['seconds'] for r in runs]):.1f} | "
                         f"{tps / ref_tps:.2f}x | {mfu:.0%} | "
                         f"{max(r['peak_rss_mb'] for r in runs):.0f} | "
                         f"{mean([r['seconds'] for r in runs]):.1f} | "
                         f"{mean([r['wall'] for r in runs]):.1f} | "
                         f"{mean(acc):.4f} [{min(acc):.4f}, {max(acc):.4f}] |")
    lines += ["", "Dev accuracy, tunelab minus reference, seed by seed (mean +- its standard error):"]
    for workload, precision in ((w, p) for w in args.workloads for p in args.precisions):
        diffs = [t["accuracy"] - r["accuracy"] for t, r in
                 zip(results[f"tunelab-{workload}-{precision}"],
                     results[f"reference-{workload}-{precision}"])]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        lines.append(f"- {workload} {precision}: {', '.join(f'{d:+.4f}' for d in diffs)}; "
                     f"mean {mean(diffs):+.4f} +- {se:.4f}")
    lines += ["", f"Command: `python bench/classify_vs_peft.py --examples {args.examples} --seeds "
              f"{' '.join(map(str, args.seeds))} --workloads {' '.join(args.workloads)} "
              f"--precisions {' '.join(args.precisions)} --lr-lora "
              f"{args.lr_lora:g} --lr-full {args.lr_full:g}` "
              "(part of `make bench`)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=4000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    p.add_argument("--lr-lora", type=float, default=WORKLOADS["lora"]["lr"])
    p.add_argument("--lr-full", type=float, default=WORKLOADS["full"]["lr"])
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # a child's seed
    p.add_argument("--work", default="/tmp/tunelab-bench-classify")
    p.add_argument("--child", choices=RUNS)
    p.add_argument("--json")
    args = p.parse_args()
    if args.child:
        return child(args.child, args)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    peak = matmul_peak_gflops()
    results: dict[str, list[dict]] = {kind: [] for kind in RUNS}
    for seed in args.seeds:
        for kind in [k for k in RUNS if k.split("-")[1] in args.workloads
                     and k.split("-")[2] in args.precisions]:
            out = Path(args.work) / f"{kind}-{seed}.json"
            print(f"running {kind}, seed {seed} ...", flush=True)
            subprocess.run([sys.executable, __file__, "--child", kind, "--json", str(out),
                            "--work", args.work, "--examples", str(args.examples),
                            "--seed", str(seed), "--lr-lora", str(args.lr_lora),
                            "--lr-full", str(args.lr_full)], check=True)
            results[kind].append(json.loads(out.read_text()))
            print(f"  {kind}: {results[kind][-1]}", flush=True)
    section = table(args, results, peak)
    update_benchmarks(section)
    print(section)


if __name__ == "__main__":
    main()
