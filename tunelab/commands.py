"""The non-training commands: show config, info, eval, predict, merge."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import yaml

from tunelab import methods
from tunelab.config import RunConfig, dump_config, validate
from tunelab.data.splits import load_splits, read_like_training
from tunelab.errors import AdapterError, DataError
from tunelab.eval.metrics import confusion, format_confusion
from tunelab.methods.peft_format import merge as merge_layers
from tunelab.models import load_classifier, resolve
from tunelab.named_adapters import load_run
from tunelab.runs import load_trained, task_runs
from tunelab.tasks.classification import ClassificationTask


def show_config(cfg: RunConfig) -> str:
    return dump_config(cfg)


def info(cfg: RunConfig) -> None:
    if cfg.task == "multitask":  # the shared model with every task's head
        from tunelab.tasks.setup import setup

        model = setup(cfg, lambda _: None).model
    elif cfg.task == "token_classification":
        from tunelab.data.conll import load_conll_splits
        from tunelab.models import load_token_classifier

        tags = load_conll_splits(cfg.data).tags
        model = load_token_classifier(resolve(cfg.model.name), tags, cfg.model.dropout)
    elif cfg.task == "masked_lm":
        from tunelab.models.mlm import load_masked_lm

        model = load_masked_lm(resolve(cfg.model.name), cfg.model.dropout)[0]
    else:
        splits = load_splits(cfg.data)
        model = load_classifier(resolve(cfg.model.name), splits.labels, cfg.model.dropout)
    for line in methods.apply(model, cfg.method).lines(max_names=50):
        print(line)


def _task(tokenizer, info: dict) -> ClassificationTask:
    return ClassificationTask(info["labels"], info["max_length"], tokenizer.pad_token_id)


def evaluate(run_dir: Path, data: str | None, split: str, adapters: list[str] | None = None,
             use: str | None = None, task: str | None = None) -> dict:
    """Score a run; a multitask run's `task` (every task in turn when none is given)."""
    runs = task_runs(run_dir, task)
    if runs != [run_dir]:
        if data and len(runs) > 1:
            raise DataError("eval --data: a multitask run has several tasks; say which with "
                            "--task NAME")
        out = {}
        for sub in runs:
            print(f"== task {sub.name}")
            out[sub.name] = evaluate(sub, data, split, adapters, use)
        return out if len(runs) > 1 else out[runs[0].name]
    return _evaluate_run(run_dir, data, split, adapters, use)


def _evaluate_run(run_dir: Path, data: str | None, split: str, adapters: list[str] | None,
                  use: str | None) -> dict:
    import torch

    model, tokenizer, info = load_run(run_dir, adapters, use)
    cfg = validate(yaml.safe_load((run_dir / "config.yaml").read_text()), str(run_dir / "config.yaml"))
    if info["task"] == "causal_lm":
        return _evaluate_lm(model, tokenizer, cfg, data)
    if info["task"] == "translation":
        return _evaluate_translation(model, tokenizer, cfg, info, data)
    if info["task"] == "masked_lm":
        from tunelab.tasks.mlm_setup import evaluate_mlm

        return evaluate_mlm(model, tokenizer, cfg, data)
    if info["task"] == "token_classification":
        from tunelab import ner_commands

        return ner_commands.evaluate(cfg, model, tokenizer, info, data, split)
    examples, name = eval_items(cfg, data, split, load_splits, read_like_training)
    task = _task(tokenizer, info)
    unknown = [e for e in examples if e.label not in task.index]
    if unknown:
        raise DataError(f"{unknown[0].where}: label {unknown[0].label!r} is not one of the run's "
                        f"labels ({', '.join(task.labels)})")
    encoded = task.encode(tokenizer, examples)
    pred = task.predict(model, encoded, 64, torch.device("cpu"))
    from tunelab.eval.metrics import classification_metrics

    scores = classification_metrics(pred.labels, encoded.labels, len(task.labels))
    print(f"{name}: {len(examples)} examples")
    print(f"accuracy: {scores['accuracy']:.4f}")
    print(f"macro-F1: {scores['macro_f1']:.4f}")
    print("confusion matrix (rows: gold):")
    print(format_confusion(confusion(pred.labels, encoded.labels, len(task.labels)), task.labels))
    return scores


def _evaluate_lm(model, tokenizer, cfg, data: str | None) -> dict:
    """Held-out loss and perplexity on supervised tokens (the run's held-out split by default)."""
    import torch

    from tunelab.data.sft import load_records
    from tunelab.tasks.causal_lm import CausalLMTask
    from tunelab.tasks.setup import renderer_for, split_records

    d = cfg.data
    records = load_records(data, d.format, d.columns, d.roles) if data else split_records(cfg)[1]
    renderer = renderer_for(cfg, tokenizer)
    encoded, stats = renderer.encode(records)
    scores = CausalLMTask(tokenizer, renderer, packing=False).evaluate(
        model, encoded, cfg.train.eval_batch_size, torch.device("cpu"))
    print(f"{data or 'held-out'}: {stats.kept} examples, {scores['tokens']} supervised tokens")
    print(f"loss: {scores['loss']:.4f}")
    print(f"perplexity: {scores['perplexity']:.4f}")
    return scores


def eval_items(cfg, data: str | None, split: str, load: Callable, read_like: Callable
               ) -> tuple[list, str]:
    """The examples `tunelab eval` scores and their name: the file `--data`, read like the
    run's training data, or the run's own dev or test split."""
    if data:
        return read_like(cfg.data, data), data
    splits = load(cfg.data)
    if split == "test" and splits.test is None:
        raise DataError("this run's data has no test file; pass --data PATH")
    return (splits.test if split == "test" else splits.dev), split


def _evaluate_translation(model, tokenizer, cfg, info: dict, data: str | None) -> dict:
    """BLEU and chrF on the run's test split (data.max_test_examples pairs), or on another
    directory of {split}.{lang} files with the same split names."""
    import torch

    from tunelab.tasks.setup import translation_task

    if data:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": data})})
    task, _ = translation_task(cfg, tokenizer, info["route"] == "seq2seq", lambda _: None)
    scores, _ = task.test_scores(model, torch.device("cpu"))
    print(f"{data or cfg.data.path} test: {len(task.test)} pairs")
    print(f"BLEU: {scores['bleu']:.2f}  chrF: {scores['chrf']:.2f}")
    return scores


def predict(run_dir: Path, texts: list[str], file: Path | None, adapters: list[str] | None = None,
            use: str | None = None, task: str | None = None) -> list:
    import torch

    runs = task_runs(run_dir, task)
    if len(runs) > 1:
        raise DataError(f"predict: {run_dir} holds the tasks {', '.join(r.name for r in runs)}; "
                        "pick one with --task NAME")
    run_dir = runs[0]
    if file is not None:
        if not file.is_file():
            raise DataError(f"{file}: file not found")
        texts = texts + [t for t in file.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not texts:
        raise DataError("predict: give texts as arguments or --file with one text per line")
    model, tokenizer, info = load_run(run_dir, adapters, use)
    if info["task"] == "token_classification":
        from tunelab import ner_commands

        return ner_commands.predict(model, tokenizer, info, texts)
    if info["task"] == "masked_lm":
        raise DataError(f"predict: {run_dir} is a masked_lm run (continued pretraining); score it "
                        "with `tunelab eval`, or fine-tune from it with model.name: {run_dir}")
    if info["task"] != "classification":
        raise DataError(f"predict: {run_dir} is a {info['task']} run; use `tunelab generate`")
    pairs = None
    if info.get("text_pair"):  # the run was trained on (text, text_pair): give "first<TAB>second"
        bad = [t for t in texts if "\t" not in t]
        if bad:
            raise DataError(f"predict: this run classifies text pairs; separate the two texts "
                            f"with a tab (got {bad[0]!r})")
        texts, pairs = zip(*(t.split("\t", 1) for t in texts))
        texts, pairs = list(texts), list(pairs)
    enc = tokenizer(texts, pairs, truncation=True, max_length=info["max_length"], padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.float().softmax(-1)
    out = []
    for text, row in zip(texts, probs):
        k = int(row.argmax())
        out.append((info["labels"][k], float(row[k])))
        print(f"{info['labels'][k]}\t{float(row[k]):.4f}\t{text}")
    return out


def merge_one(args: list[Path], options: list[str] | None = None) -> Path:
    """`tunelab merge RUN_DIR OUT` (no --out): fold one run's adapter into its base."""
    if options:
        raise AdapterError(f"merge: --{options[0].replace('_', '-')} combines adapters; name the "
                           "output with --out OUT (merge A B ... --out OUT)")
    if len(args) != 2:
        raise AdapterError(f"merge: give RUN_DIR OUT, or several adapters with --out OUT (got "
                           f"{len(args)} paths and no --out)")
    if any((args[1] / f).is_file() for f in ("run.json", "adapter_config.json")):
        raise AdapterError(f"merge: {args[1]} holds a run or an adapter; to combine adapters, "
                           "write the output with --out OUT")
    return merge(*args)


def merge(run_dir: Path, out: Path) -> Path:
    model, tokenizer, info = load_trained(run_dir)
    n = merge_layers(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    auto = {"causal_lm": "AutoModelForCausalLM", "seq2seq": "AutoModelForSeq2SeqLM",
            "token_classification": "AutoModelForTokenClassification",
            "masked_lm": "AutoModelForMaskedLM"}.get(
        info.get("route", info["task"]), "AutoModelForSequenceClassification")
    print(f"merged {n} adapter layers into the base; wrote {out} (loads with "
          f"transformers.{auto}.from_pretrained)")
    return out
