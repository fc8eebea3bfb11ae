"""Per-task setup: read the data, load the matching model and tokenizer, encode.

Data are read before any weights load, so data errors surface in a second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tunelab.config import CausalLMRun, ClassificationRun, RunConfig, TokenClassificationRun
from tunelab.data import load_splits
from tunelab.data.conll import load_conll_splits
from tunelab.data.render import Renderer
from tunelab.data.sft import load_records
from tunelab.errors import DataError
from tunelab.models import (load_causal_lm, load_classifier, load_token_classifier, load_tokenizer,
                            resolve)
from tunelab.tasks.causal_lm import CausalLMTask
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.token_classification import TokenClassificationTask


@dataclass
class Setup:
    model: Any
    tokenizer: Any
    task: Any
    train: Any
    dev: Any
    model_path: Path
    info: dict[str, Any] = field(default_factory=dict)  # stored in run.json


def classification(cfg: ClassificationRun, log: Callable[[str], None]) -> Setup:
    splits = load_splits(cfg.data)
    model_path = resolve(cfg.model.name)
    for note in splits.notes:
        log(note)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev examples, "
        f"labels: {', '.join(splits.labels)}")
    tokenizer = load_tokenizer(model_path)
    model = load_classifier(model_path, splits.labels, cfg.model.dropout,
                            pad_token_id=tokenizer.pad_token_id)
    task = ClassificationTask(splits.labels, cfg.model.max_length, tokenizer.pad_token_id)
    return Setup(model, tokenizer, task, task.encode(tokenizer, splits.train),
                 task.encode(tokenizer, splits.dev), model_path,
                 {"labels": splits.labels, "text_pair": splits.train[0].text_pair is not None})


def split_records(cfg: CausalLMRun) -> tuple[list, list]:
    """(train, held-out) records: eval_path if given, else a seeded random hold-out."""
    d = cfg.data
    records = load_records(d.path, d.format, d.columns, d.roles)
    if d.eval_path:
        held = load_records(d.eval_path, d.format, d.columns, d.roles)
    else:
        if d.eval_size >= len(records):
            raise DataError(f"data.eval_size {d.eval_size} leaves no training examples out of "
                            f"{len(records)}; lower it or give data.eval_path")
        order = list(range(len(records)))
        random.Random(d.split_seed).shuffle(order)
        held = [records[i] for i in sorted(order[: d.eval_size])]
        records = [records[i] for i in sorted(order[d.eval_size:])]
    if d.max_examples:
        records = records[: d.max_examples]
    return records, held


def renderer_for(cfg: CausalLMRun, tokenizer) -> Renderer:
    d = cfg.data
    return Renderer(tokenizer, d.loss_on, cfg.model.max_length, d.truncation, d.append_eos,
                    d.template)


def causal_lm(cfg: CausalLMRun, log: Callable[[str], None]) -> Setup:
    train_records, held = split_records(cfg)
    model_path = resolve(cfg.model.name)
    tokenizer = load_tokenizer(model_path)
    renderer = renderer_for(cfg, tokenizer)
    train, stats = renderer.encode(train_records)
    dev, dev_stats = renderer.encode(held)
    d = cfg.data
    log(f"data: {len(train)} train / {len(dev)} held-out examples; loss on {d.loss_on} tokens; "
        f"truncation {d.truncation} at {cfg.model.max_length}; "
        f"{'packing' if d.packing else 'padding per batch'}")
    for line in stats.lines():
        log(f"  train {line}")
    log(f"  held-out {dev_stats.lines()[1]}")
    model = load_causal_lm(model_path, cfg.model.dropout)
    task = CausalLMTask(tokenizer, renderer, d.packing, d.samples, d.sample_tokens)
    return Setup(model, tokenizer, task, train, dev, model_path,
                 {"chat_template": d.template, "train_stats": vars(stats) | {"lengths": None}})


def token_classification(cfg: TokenClassificationRun, log: Callable[[str], None]) -> Setup:
    d = cfg.data
    splits = load_conll_splits(d)
    model_path = resolve(cfg.model.name)
    for note in splits.notes:
        log(note)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev sentences; {d.scheme.upper()} "
        f"tags read as IOB2: {', '.join(splits.tags)}; loss on "
        + ("every sub-token (B-X continues as I-X)" if d.label_all_subtokens
           else "the first sub-token of each word"))
    tokenizer = load_tokenizer(model_path)
    model = load_token_classifier(model_path, splits.tags, cfg.model.dropout,
                                  pad_token_id=tokenizer.pad_token_id)
    task = TokenClassificationTask(splits.tags, cfg.model.max_length, tokenizer.pad_token_id,
                                   d.label_all_subtokens)
    train, dev = task.encode(tokenizer, splits.train), task.encode(tokenizer, splits.dev)
    for name, part in (("train", train), ("dev", dev)):
        if part.lost_words:
            log(f"  {name}: {part.lost_words} words have no sub-token within model.max_length "
                f"{cfg.model.max_length} (untrained; scored as predicted O)")
    return Setup(model, tokenizer, task, train, dev, model_path,
                 {"labels": splits.tags, "scheme": d.scheme,
                  "label_all_subtokens": d.label_all_subtokens})


SETUPS: dict[str, Callable[[Any, Callable[[str], None]], Setup]] = {
    "classification": classification, "causal_lm": causal_lm,
    "token_classification": token_classification}


def setup(cfg: RunConfig, log: Callable[[str], None]) -> Setup:
    return SETUPS[cfg.task](cfg, log)
