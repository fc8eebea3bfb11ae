"""Benchmark: tunelab vs TRL SFTTrainer + peft, LoRA SFT of SmolLM2-135M-Instruct on Alpaca.

Same model, the same training and held-out examples (tunelab's seeded split), the same
hyperparameters and seed; each configuration runs in its own process, one after another,
so peak RSS is per run. Held-out loss is measured for both tools by the same code
(tunelab's evaluator, supervised assistant tokens only), loading TRL's adapter through
tunelab's PEFT loader. Writes a table into BENCHMARKS.md.

    python bench/sft_vs_trl.py [--examples 100] [--eval 40] [--max-length 256]
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
from common import machine, matmul_peak_gflops, peak_rss_mb, update_benchmarks  # noqa: E402

# Matmul FLOPs per token with the base frozen (forward + input gradients, no weight
# gradients): 4N, N = SmolLM2-135M's 134.5M weights including the (tied) output layer.
FLOPS_PER_TOKEN = 4 * 134.5e6
# TRL's SFTConfig turns gradient checkpointing on by default (less memory, more compute);
# tunelab leaves it off unless asked, so it runs both ways here.
# -chunked: the chunked output layer + loss (train.loss_chunk_size); -packed: packed rows,
# attention per example (varlen, no T x T mask); -gc: gradient checkpointing.
RUNS = ["tunelab", "tunelab-chunked", "tunelab-gc", "tunelab-gc-chunked", "tunelab-packed",
        "tunelab-packed-chunked", "trl", "trl-packed"]
# --quantize nf4 int8: tunelab on a quantized base (model.quantize) with the memory-lean
# settings (gradient checkpointing, chunked loss), next to tunelab-gc-chunked: rows after RUNS
QUANT_RUNS = ["tunelab-gc-chunked-nf4", "tunelab-gc-chunked-int8"]
LOSS_CHUNK = 256
LR, RANK, ALPHA, BATCH, WARMUP, SEED = 5e-4, 16, 32, 4, 0.05, 0


def run_config(args: argparse.Namespace, out_dir: Path, packing: bool, checkpointing: bool = False,
               chunked: bool = False, quantize: str | None = None):
    from tunelab.config import load_config

    return load_config(None, [
        "task=causal_lm", "model.name=smollm2", f"model.max_length={args.max_length}",
        "data.path=alpaca_en", f"data.max_examples={args.examples}", f"data.eval_size={args.eval}",
        "data.samples=0", f"data.packing={str(packing).lower()}", "method.name=lora",
        f"method.r={RANK}", f"method.alpha={ALPHA}", "method.targets=all-linear",
        "train.epochs=1", f"train.batch_size={BATCH}", f"train.lr={LR}", "train.weight_decay=0",
        f"train.warmup_ratio={WARMUP}", "train.checkpoint_every=100000", f"train.seed={SEED}",
        "train.eval_batch_size=8", "train.load_best_at_end=false",
        f"train.gradient_checkpointing={str(checkpointing).lower()}",
        *([f"train.loss_chunk_size={LOSS_CHUNK}"] if chunked else []),
        *([f"model.quantize={quantize}"] if quantize else []), f"output_dir={out_dir}"])


def child_tunelab(args: argparse.Namespace, out_dir: Path, packing: bool, checkpointing: bool) -> dict:
    from tunelab.recipes.run import train

    parts = out_dir.name.split("-")
    quantize = next((q for q in ("nf4", "int8") if q in parts), None)
    summary = train(run_config(args, out_dir, packing, checkpointing, "chunked" in parts,
                               quantize), overwrite=True, log=lambda _: None)
    # a quantized run's held-out loss is on its quantized base (the model that trained); its
    # adapter on the fp32 base is measured too (held_out_loss), once RSS has been read
    return {"tokens": summary["tokens_per_s"] * summary["train_seconds"],
            "seconds": summary["train_seconds"], "adapter": summary["artifact"],
            "loss": summary["final_dev"]["loss"], "base_loss": summary["initial_dev"]["loss"],
            **({"quantize": quantize} if quantize else {})}


def child_trl(args: argparse.Namespace, out_dir: Path, packing: bool, checkpointing: bool) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tunelab.models import load_causal_lm, load_tokenizer
    from tunelab.runs.resolve import resolve
    from tunelab.recipes.causal_lm import split_records

    cfg = run_config(args, out_dir, packing)
    train_records, _ = split_records(cfg)
    rows = [{"prompt": r.messages[:-1], "completion": r.messages[-1:]} for r in train_records]
    base = resolve("smollm2")
    torch.manual_seed(SEED)
    model, tokenizer = load_causal_lm(base), load_tokenizer(base)
    sft = SFTConfig(output_dir=str(out_dir), per_device_train_batch_size=BATCH,
                    num_train_epochs=1, learning_rate=LR, lr_scheduler_type="linear",
                    warmup_steps=WARMUP, weight_decay=0.0, max_grad_norm=1.0, seed=SEED,
                    logging_steps=10, save_strategy="no", report_to=[], max_length=args.max_length,
                    packing=packing, completion_only_loss=True, use_cpu=True, bf16=False,
                    gradient_checkpointing=checkpointing,
                    dataloader_num_workers=0)
    peft_cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=sft, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft_cfg)
    tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.model.save_pretrained(out_dir / "adapter")
    return {"tokens": tokens, "seconds": seconds, "adapter": str(out_dir / "adapter"),
            "peak_rss_mb": peak_rss_mb()}  # before the held-out evaluation loads another copy


def held_out_loss(args: argparse.Namespace, adapter: str) -> float:
    """tunelab's evaluator on the same held-out examples, for any PEFT adapter."""
    import torch

    from tunelab.methods.peft_format import load_adapter
    from tunelab.models import load_causal_lm, load_tokenizer
    from tunelab.runs.resolve import resolve
    from tunelab.tasks.causal_lm import CausalLMTask
    from tunelab.recipes.causal_lm import renderer_for, split_records

    cfg = run_config(args, Path("/tmp/unused"), False)
    _, held = split_records(cfg)
    base = resolve("smollm2")
    tokenizer = load_tokenizer(base)
    renderer = renderer_for(cfg, tokenizer)
    dev, _ = renderer.encode(held)
    model = load_causal_lm(base)
    load_adapter(model, adapter, [])
    task = CausalLMTask(tokenizer, renderer, packing=False)
    return task.evaluate(model, dev, 8, torch.device("cpu"))["loss"]


def child(kind: str, args: argparse.Namespace) -> None:
    out_dir = Path(args.work) / kind
    packing = "packed" in kind.split("-")
    checkpointing = kind.startswith("trl") or "gc" in kind.split("-")  # TRL: its default
    result = (child_trl if kind.startswith("trl") else child_tunelab)(args, out_dir, packing,
                                                                      checkpointing)
    result["checkpointing"] = checkpointing
    result.setdefault("peak_rss_mb", peak_rss_mb())
    if "loss" not in result:
        result["loss"] = held_out_loss(args, result["adapter"])
    if result.get("quantize"):
        result["loss_fp32_base"] = held_out_loss(args, result["adapter"])
    Path(args.json).write_text(json.dumps(result))


def write_table(args: argparse.Namespace, results: dict[str, dict], peak: float) -> str:
    import trl

    ref = results["trl-packed"]["tokens"] / results["trl-packed"]["seconds"]
    lines = [f"## LoRA SFT: SmolLM2-135M-Instruct on Alpaca (tunelab vs TRL {trl.__version__} + peft)",
             "", f"Measured {date.today()} on {machine()}; fp32 matmul peak measured "
             + ("apart from the runs (--peak-gflops)" if args.peak_gflops else "in the same run")
             + f": {peak:.1f} GFLOP/s (MFU: 4N model FLOPs per real token, N = 134.5M).",
             f"{args.examples} training and {args.eval} held-out Alpaca (en) examples, max length "
             f"{args.max_length}, 1 epoch, batch {BATCH}, LoRA r{RANK}/alpha {ALPHA} on all linear "
             f"layers, lr {LR}, linear schedule, warmup {WARMUP:.0%}, seed {SEED}, fp32 on CPU. "
             "Held-out loss: mean cross-entropy on supervised (assistant) tokens, computed by the "
             "same code for both tools; TRL runs with its default settings, gradient "
             "checkpointing included. Base model's held-out loss: "
             f"{results['tunelab']['base_loss']:.4f}.", "",
             f"-chunked: output layer and loss {LOSS_CHUNK} tokens at a time.", "",
             "| run | gradient checkpointing | real tokens | train time (s) | real tokens/s | vs TRL packed | MFU | peak RSS (MB) | held-out loss |",
             "|---|---|---|---|---|---|---|---|---|"]
    for kind in [k for k in RUNS + QUANT_RUNS if k in results]:
        r = results[kind]
        tps = r["tokens"] / r["seconds"]
        lines.append(f"| {kind} | {'on' if r['checkpointing'] else 'off'} | {r['tokens']:.0f} | {r['seconds']:.0f} | {tps:.1f} | "
                     f"{tps / ref:.2f}x | {tps * FLOPS_PER_TOKEN / (peak * 1e9):.0%} | "
                     f"{r['peak_rss_mb']:.0f} | {r['loss']:.4f} |")
    quant = [k for k in QUANT_RUNS if k in results]
    if quant:
        lines += ["", "Quantized base (model.quantize, with gradient checkpointing and the chunked "
                  "loss, against tunelab-gc-chunked in fp32); the held-out loss above is on the "
                  "quantized base the adapter trained on; the same adapter on the fp32 base: "
                  + ", ".join(f"{k} {results[k]['loss_fp32_base']:.4f}" for k in quant) + "."]
    lines += ["", *goals(results)]
    lines += ["", f"Command: `python bench/sft_vs_trl.py --examples {args.examples} --eval "
              f"{args.eval} --max-length {args.max_length}"
              + (f" --quantize {' '.join(k.split('-')[-1] for k in quant)}" if quant else "")
              + "` (or `make bench`)."]
    return "\n".join(lines) + "\n"


def goals(results: dict[str, dict]) -> list[str]:
    """Issue 23's goals read off this run: packed SFT (varlen attention) >= 2x TRL packed
    real tokens/s; a quantized base cuts peak RSS >= 40% at <= 2% held-out loss."""
    def tps(kind: str) -> float:
        return results[kind]["tokens"] / results[kind]["seconds"]

    out = ["Goals:", ""]
    packed = max((k for k in results if "packed" in k.split("-") and k.startswith("tunelab")),
                 key=tps)
    ratio = tps(packed) / tps("trl-packed")
    out.append(f"- packed SFT with varlen attention >= 2x TRL packed tokens/s: {packed} "
               f"{ratio:.2f}x: {'met' if ratio >= 2 else 'NOT met'}")
    base = results.get("tunelab-gc-chunked")
    for kind in [k for k in QUANT_RUNS if k in results and base]:
        r = results[kind]
        cut = 1 - r["peak_rss_mb"] / base["peak_rss_mb"]
        loss = r["loss"] / base["loss"] - 1
        met = cut >= 0.40 and abs(loss) <= 0.02
        out.append(f"- {kind.split('-')[-1]} base cuts peak RSS >= 40% at <= 2% held-out loss: "
                   f"{base['peak_rss_mb']:.0f} -> {r['peak_rss_mb']:.0f} MB ({cut:.0%} less), "
                   f"held-out loss {loss:+.1%}: {'met' if met else 'NOT met'}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=100)
    p.add_argument("--eval", type=int, default=40)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--work", default="/tmp/tunelab-bench-sft")
    p.add_argument("--child", choices=RUNS + QUANT_RUNS)
    p.add_argument("--quantize", nargs="*", choices=["nf4", "int8"], default=[],
                   help="add tunelab runs on a quantized base (model.quantize)")
    p.add_argument("--json")
    p.add_argument("--table-only", action="store_true",
                   help="write the table from the run files a finished run left in --work")
    p.add_argument("--peak-gflops", type=float, help="with --table-only: the run's measured peak")
    p.add_argument("--only", nargs="*", choices=RUNS, default=RUNS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args)
    peak = args.peak_gflops or matmul_peak_gflops()
    results = {}
    kinds = args.only + [f"tunelab-gc-chunked-{q}" for q in args.quantize]
    if args.table_only:
        results = {k: json.loads((Path(args.work) / f"{k}.json").read_text()) for k in kinds}
        kinds = []
    for kind in kinds:
        out = Path(args.work) / f"{kind}.json"
        cmd = [sys.executable, __file__, "--child", kind, "--json", str(out), "--work", args.work,
               "--examples", str(args.examples), "--eval", str(args.eval),
               "--max-length", str(args.max_length)]
        Path(args.work).mkdir(parents=True, exist_ok=True)
        print(f"running {kind} ...", flush=True)
        subprocess.run(cmd, check=True)
        results[kind] = json.loads(out.read_text())
        print(f"  {kind}: {results[kind]}", flush=True)
    if set(results) >= set(RUNS):
        section = write_table(args, results, peak)
        update_benchmarks(section)
        print(section)


if __name__ == "__main__":
    main()
