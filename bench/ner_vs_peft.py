"""Benchmark: tunelab vs peft + transformers.Trainer, MiniLM + LoRA on CoNLL-2003 NER.

Both tools train all-MiniLM-L6-v2 with LoRA (r16, alpha 32, all linear layers of the encoder)
plus a fresh token-classification head, for one pass over the same 14,041 CoNLL-2003
training sentences, tokenised and label-aligned by the same code (first sub-token of each
word labelled), with the same batch, learning rate, schedule, warmup, weight decay,
clipping and seed, in fp32. The reference is peft's get_peft_model + transformers.Trainer
with DataCollatorForTokenClassification. Both trained models are scored on the CoNLL-2003
test set by the same code (per-word predictions from the first sub-token; seqeval entity
F1). Each run is its own process, one after another. Writes a table into BENCHMARKS.md.

    python bench/ner_vs_peft.py [--examples N]    (default: all 14,041 training sentences)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import device_name, machine, peak_rss_mb, update_benchmarks  # noqa: E402

RUNS = ["tunelab", "reference"]
R, ALPHA, LR, BATCH, MAX_LEN, SEED, WARMUP = 16, 32, 2e-3, 32, 256, 0, 0.06
TARGETS = ["query", "key", "value", "dense"]  # every Linear in BERT's layers = all-linear here


def tunelab_config(args, out: Path):
    from tunelab.config import load_config

    extra = [f"data.max_train_examples={args.examples}"] if args.examples else []
    return load_config(None, [
        "task=token_classification", "model.name=minilm", f"model.max_length={MAX_LEN}",
        "data.train=conll2003", *extra, "method.name=lora", f"method.r={R}",
        f"method.alpha={ALPHA}", "method.targets=all-linear", "method.dropout=0",
        "train.epochs=1", f"train.batch_size={BATCH}", f"train.lr={LR}",
        f"train.warmup_ratio={WARMUP}", "train.schedule=linear", "train.eval_at_start=false",
        "train.checkpoint_every=100000", f"train.seed={SEED}",
        "train.precision=fp32",  # the reference trains in fp32 too
        f"output_dir={out}"])


def score_on_test(model, cfg, splits) -> dict:
    """Entity P/R/F1 and token accuracy on the CoNLL-2003 test set: the same code for both."""
    from tunelab.models import load_tokenizer
    from tunelab.runs.resolve import resolve
    from tunelab.tasks.token_classification import TokenClassificationTask

    tok = load_tokenizer(resolve("minilm"))
    task = TokenClassificationTask(splits.tags, MAX_LEN, tok.pad_token_id, False)
    device = next(model.parameters()).device
    scores = task.evaluate(model, task.encode(tok, splits.test), 64, device)
    return {k: scores[k] for k in ("f1", "precision", "recall", "token_accuracy")} | {
        "per_type_f1": {k: v["f1"] for k, v in scores["per_type"].items()}}


def child_tunelab(args, out: Path) -> dict:
    from tunelab.data.conll import load_conll_splits
    from tunelab.runs.trained import load_trained
    from tunelab.recipes.run import train

    cfg = tunelab_config(args, out)
    s = train(cfg, overwrite=True, log=lambda _: None)
    model, _, _ = load_trained(out)  # the saved adapter, as a user would load it
    scores = score_on_test(model, cfg, load_conll_splits(cfg.data))
    return {"tokens": s["tokens_per_s"] * s["train_seconds"], "seconds": s["train_seconds"],
            "steps": s["steps"], "trainable": s["trainable"], "wall": s["wall_seconds"],
            "examples": args.examples or 14041, **scores}


def child_reference(args, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import (AutoModelForTokenClassification, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from tunelab.data.conll import load_conll_splits
    from tunelab.models import load_tokenizer
    from tunelab.runs.resolve import resolve
    from tunelab.tasks.token_classification import TokenClassificationTask

    t_start = time.perf_counter()
    cfg = tunelab_config(args, out)
    splits = load_conll_splits(cfg.data)  # the same (seeded) sentences tunelab trains on
    path = resolve("minilm")
    tok = load_tokenizer(path)
    task = TokenClassificationTask(splits.tags, MAX_LEN, tok.pad_token_id, False)
    enc = task.encode(tok, splits.train)  # the same sub-tokens and labels
    torch.manual_seed(SEED)
    model = AutoModelForTokenClassification.from_pretrained(
        str(path), num_labels=len(splits.tags), id2label=dict(enumerate(splits.tags)),
        label2id={t: i for i, t in enumerate(splits.tags)})
    model = get_peft_model(model, LoraConfig(task_type="TOKEN_CLS", r=R, lora_alpha=ALPHA,
                                             lora_dropout=0.0, target_modules=TARGETS))
    columns = {"input_ids": enc.input_ids, "attention_mask": [[1] * len(x) for x in enc.input_ids],
               "labels": enc.labels}
    if enc.token_type_ids is not None:
        columns["token_type_ids"] = enc.token_type_ids
    targs = TrainingArguments(output_dir=str(out), per_device_train_batch_size=BATCH,
                              num_train_epochs=1, learning_rate=LR, lr_scheduler_type="linear",
                              warmup_steps=WARMUP, weight_decay=0.01, max_grad_norm=1.0,
                              seed=SEED, logging_steps=50, save_strategy="no", report_to=[],
                              use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=Dataset.from_dict(columns),
                      data_collator=DataCollatorForTokenClassification(tok))
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    scores = score_on_test(model, cfg, splits)
    return {"tokens": sum(enc.lengths()), "seconds": seconds, "steps": result.global_step,
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "wall": time.perf_counter() - t_start, "examples": len(splits.train), **scores}


def child(kind: str, args) -> None:
    out = Path(args.work) / kind
    result = (child_tunelab if kind == "tunelab" else child_reference)(args, out)
    result["peak_rss_mb"] = peak_rss_mb()
    Path(args.json).write_text(json.dumps(result))


def table(args, results: dict) -> str:
    ref = results["reference"]
    n = args.examples or 14041
    lines = [f"## MiniLM + LoRA on CoNLL-2003 NER: tunelab vs peft + transformers.Trainer "
             f"({device_name()})", "",
             f"Measured {date.today()} on {machine()}; fp32 for both tools. {n} CoNLL-2003 "
             f"training sentences, one pass ({ref['steps']} steps of batch {BATCH}), max length "
             f"{MAX_LEN} (no sentence cut), LoRA r{R}/alpha {ALPHA} on every Linear of the encoder "
             f"(query, key, value, dense; 36 layers) plus a fresh token-classification head, lr "
             f"{LR:g}, linear schedule, warmup {WARMUP:.0%}, weight decay 0.01, clipping 1.0, "
             f"seed {SEED}. Both train on the same sub-tokens with the same labels (each word's "
             "first sub-token); the reference pads each batch to its longest example "
             "(DataCollatorForTokenClassification, no length grouping). Test scores: all 3,453 "
             "CoNLL-2003 test sentences, per-word predictions from the first sub-token, entity-"
             "level micro P/R/F1 by seqeval (conlleval rules), computed by the same code for both. "
             "Real tokens exclude padding; train time counts the optimizer steps only."
             + (f" OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} for both runs."
                if os.environ.get("OMP_NUM_THREADS") else ""), "",
             "| run | test entity F1 | P | R | token accuracy | F1 PER / LOC / ORG / MISC | "
             "real tokens/s | vs reference | train time (s) | wall (s) | peak RSS (MB) | "
             "trainable params |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for tool in RUNS:
        r = results[tool]
        tps = r["tokens"] / r["seconds"]
        per = " / ".join(f"{r['per_type_f1'].get(k, 0.0):.3f}" for k in ("PER", "LOC", "ORG", "MISC"))
        lines.append(f"| {tool} | {r['f1']:.4f} | {r['precision']:.4f} | {r['recall']:.4f} | "
                     f"{r['token_accuracy']:.4f} | {per} | {tps:.0f} | "
                     f"{tps / (ref['tokens'] / ref['seconds']):.2f}x | {r['seconds']:.0f} | "
                     f"{r['wall']:.0f} | {r['peak_rss_mb']:.0f} | {r['trainable']:,} |")
    diff = 100 * (results["tunelab"]["f1"] - ref["f1"])
    lines += ["", f"tunelab's test entity F1 minus the reference's: {diff:+.2f} points.", "",
              "Command: `" + (f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} "
                              if os.environ.get("OMP_NUM_THREADS") else "")
              + "python bench/ner_vs_peft.py" + (f" --examples {args.examples}"
                                                 if args.examples else "") + "`."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=None, help="training sentences (default: all)")
    p.add_argument("--work", default="/tmp/tunelab-bench-ner")
    p.add_argument("--child", choices=RUNS)
    p.add_argument("--json")
    p.add_argument("--no-write", action="store_true", help="print the table; leave BENCHMARKS.md")
    args = p.parse_args()
    if args.child:
        return child(args.child, args)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    results = {}
    for kind in RUNS:
        out = Path(args.work) / f"{kind}.json"
        print(f"running {kind} ...", flush=True)
        cmd = [sys.executable, __file__, "--child", kind, "--json", str(out), "--work", args.work]
        if args.examples:
            cmd += ["--examples", str(args.examples)]
        subprocess.run(cmd, check=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        results[kind] = json.loads(out.read_text())
        print(f"  {kind}: {results[kind]}", flush=True)
    section = table(args, results)
    if not args.no_write:
        update_benchmarks(section)
    print(section)


if __name__ == "__main__":
    main()
