"""`tunelab config show` and `tunelab info`: the validated config, and what a method would train."""

from __future__ import annotations

from pathlib import Path

from tunelab import methods
from tunelab.compress.record import describe, read_record
from tunelab.config import RunConfig, dump_config
from tunelab.data.conll import load_conll_splits
from tunelab.data.splits import load_splits
from tunelab.models import load_causal_lm, load_classifier, load_token_classifier
from tunelab.models.mlm import load_masked_lm
from tunelab.models.quantize import quantize_model
from tunelab.models.student import student_record
from tunelab.recipes.setup import setup
from tunelab.runs.resolve import resolve_config


def config_source(arg: str) -> str:
    """`tunelab info RUN_DIR` reads the run's config.yaml; any other argument is a config file."""
    saved = Path(arg) / "config.yaml"
    return str(saved) if Path(arg).is_dir() and saved.is_file() else arg


def show_config(cfg: RunConfig) -> str:
    return dump_config(cfg)


def info(cfg: RunConfig) -> None:
    path = resolve_config(cfg.model)
    if cfg.task in ("multitask", "image_classification"):  # multitask: every task's head

        model = setup(cfg, lambda _: None).model
    elif cfg.task == "token_classification":
        tags = load_conll_splits(cfg.data).tags
        model = load_token_classifier(path, tags, cfg.model.dropout)
    elif cfg.task == "masked_lm":
        model = load_masked_lm(path, cfg.model.dropout)[0]
    elif cfg.task == "causal_lm":
        model = load_causal_lm(path, cfg.model.dropout)
    else:
        splits = load_splits(cfg.data)
        model = load_classifier(path, splits.labels, cfg.model.dropout,
                                pooling=cfg.model.pooling)
    if cfg.model.quantize is not None:  # as a run quantizes its base: before the method
        for line in quantize_model(model, cfg.model.quantize, cfg.model.compute_dtype).lines():
            print(line)
    for line in methods.apply(model, cfg.method, cfg.train.head_lr_scale).lines(max_names=50):
        print(line)
    pruned = read_record(path)  # model.name is a `tunelab prune` output
    for line in describe(pruned) if pruned else []:
        print(line)
    student = student_record(path)
    if student:
        print(f"model.keep_layers: layers {student['kept_layers']} of "
              f"{student['layers_before']} kept, {student['dropped_layers']} dropped")
