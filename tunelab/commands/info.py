"""`tunelab config show` and `tunelab info`: the validated config, and what a method would train."""

from __future__ import annotations

from tunelab import methods
from tunelab.config import RunConfig, dump_config
from tunelab.data.conll import load_conll_splits
from tunelab.data.splits import load_splits
from tunelab.models import load_classifier, load_token_classifier
from tunelab.models.mlm import load_masked_lm
from tunelab.recipes.setup import setup
from tunelab.runs.resolve import resolve


def show_config(cfg: RunConfig) -> str:
    return dump_config(cfg)


def info(cfg: RunConfig) -> None:
    if cfg.task == "multitask":  # the shared model with every task's head

        model = setup(cfg, lambda _: None).model
    elif cfg.task == "token_classification":
        tags = load_conll_splits(cfg.data).tags
        model = load_token_classifier(resolve(cfg.model.name), tags, cfg.model.dropout)
    elif cfg.task == "masked_lm":
        model = load_masked_lm(resolve(cfg.model.name), cfg.model.dropout)[0]
    else:
        splits = load_splits(cfg.data)
        model = load_classifier(resolve(cfg.model.name), splits.labels, cfg.model.dropout)
    for line in methods.apply(model, cfg.method).lines(max_names=50):
        print(line)
