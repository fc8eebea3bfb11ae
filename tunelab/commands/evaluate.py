"""`tunelab eval`: score a run (or each task of a multitask run, or a run's ONNX export) on
dev, test or a file."""

from __future__ import annotations

from pathlib import Path

import yaml

from tunelab.commands import images as image_commands
from tunelab.commands import ner as ner_commands
from tunelab.config import validate
from tunelab.data.sft import load_records
from tunelab.data.splits import eval_items, load_splits, read_like_training
from tunelab.errors import DataError
from tunelab.recipes.causal_lm import renderer_for, split_records
from tunelab.recipes.mlm import evaluate_mlm
from tunelab.recipes.translation import translation_task
from tunelab.runs.layout import read_run_info, task_runs
from tunelab.runs.named_adapters import load_run
from tunelab.runs.onnx_model import is_onnx_export, load_onnx_run
from tunelab.tasks.causal_lm import CausalLMTask
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.metrics import print_classification_scores


def evaluate(run_dir: Path, data: str | None, split: str, adapters: list[str] | None = None,
             use: str | None = None, task: str | None = None) -> dict:
    """Score a run; a multitask run's `task` (every task in turn when none is given); an ONNX
    export (`tunelab export RUN --to onnx OUT`) through ONNX Runtime, by the same code."""
    if is_onnx_export(run_dir):
        return _evaluate_run(run_dir, data, split, adapters, use, task)
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
                  use: str | None, task: str | None = None) -> dict:
    import torch

    onnx = is_onnx_export(run_dir)
    if not onnx and read_run_info(run_dir)["task"] == "image_classification":
        return image_commands.evaluate(run_dir, data, split, adapters, use)
    model, tokenizer, info = (load_onnx_run(run_dir, adapters, use, task) if onnx
                              else load_run(run_dir, adapters, use))
    cfg = validate(yaml.safe_load((run_dir / "config.yaml").read_text()), str(run_dir / "config.yaml"))
    if info["task"] == "causal_lm":
        return _evaluate_lm(model, tokenizer, cfg, data)
    if info["task"] == "translation":
        return _evaluate_translation(model, tokenizer, cfg, info, data)
    if info["task"] == "masked_lm":
        return evaluate_mlm(model, tokenizer, cfg, data)
    if info["task"] == "token_classification":
        return ner_commands.evaluate(cfg, model, tokenizer, info, data, split)
    examples, name = eval_items(cfg, data, split, load_splits, read_like_training)
    task = ClassificationTask.from_run_info(tokenizer, info)
    unknown = [e for e in examples if e.label not in task.index]
    if unknown:
        raise DataError(f"{unknown[0].where}: label {unknown[0].label!r} is not one of the run's "
                        f"labels ({', '.join(task.labels)})")
    encoded = task.encode(tokenizer, examples)
    pred = task.predict(model, encoded, 64, torch.device("cpu"))

    return print_classification_scores(name, f"{len(examples)} examples", pred.labels,
                                       encoded.labels, task.labels)


def _evaluate_lm(model, tokenizer, cfg, data: str | None) -> dict:
    """Held-out loss and perplexity on supervised tokens (the run's held-out split by default)."""
    import torch

    d = cfg.data
    records = (load_records(data, d.format, d.columns, d.roles, encoding=d.encoding) if data
               else split_records(cfg)[1])
    renderer = renderer_for(cfg, tokenizer)
    encoded, stats = renderer.encode(records)
    scores = CausalLMTask(tokenizer, renderer, packing=False).evaluate(
        model, encoded, cfg.train.eval_batch_size, torch.device("cpu"))
    print(f"{data or 'held-out'}: {stats.kept} examples, {scores['tokens']} supervised tokens")
    print(f"loss: {scores['loss']:.4f}")
    print(f"perplexity: {scores['perplexity']:.4f}")
    return scores


def _evaluate_translation(model, tokenizer, cfg, info: dict, data: str | None) -> dict:
    """BLEU and chrF on the run's test split (data.max_test_examples pairs), or on another
    directory of {split}.{lang} files with the same split names."""
    import torch

    if data:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": data})})
    task, _ = translation_task(cfg, tokenizer, info["route"] == "seq2seq", lambda _: None)
    scores, _ = task.test_scores(model, torch.device("cpu"))
    print(f"{data or cfg.data.path} test: {len(task.test)} pairs")
    print(f"BLEU: {scores['bleu']:.2f}  chrF: {scores['chrf']:.2f}")
    return scores
