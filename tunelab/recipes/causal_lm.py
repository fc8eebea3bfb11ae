"""Causal LM (chat SFT and continued pretraining): records or text blocks, rendered and masked."""

from __future__ import annotations

from typing import Callable

from tunelab.config import CausalLMRun
from tunelab.data.blocks import encode_blocks, held_out_blocks
from tunelab.data.coverage import check_coverage, record_fields
from tunelab.data.render import LMEncoded, Renderer
from tunelab.data.sft import load_records
from tunelab.data.splits import hold_out
from tunelab.models import load_causal_lm, load_tokenizer
from tunelab.recipes.base import Setup
from tunelab.runs.resolve import resolve_config
from tunelab.tasks.causal_lm import CausalLMTask


def split_records(cfg: CausalLMRun) -> tuple[list, list]:
    """(train, held-out) records: eval_path if given, else a seeded random hold-out."""
    d = cfg.data
    records = load_records(d.path, d.format, d.columns, d.roles, d.text_split, d.encoding)
    if d.eval_path:
        held = load_records(d.eval_path, d.format, d.columns, d.roles, d.text_split, d.encoding)
    else:
        records, held = hold_out(records, d.eval_size, d.split_seed)
    if d.max_examples:
        records = records[: d.max_examples]
    return records, held


def renderer_for(cfg: CausalLMRun, tokenizer) -> Renderer:
    d = cfg.data
    return Renderer(tokenizer, d.loss_on, cfg.model.max_length, d.truncation, d.append_eos,
                    d.template)


def check_readable(cfg: CausalLMRun, tokenizer, splits: dict[str, list],
                   log: Callable[[str], None]) -> None:
    """Unknown-token share of each field of the records (tunelab/data/coverage.py); a no-op for
    byte-level tokenizers, which never produce the unknown token."""
    check_coverage(tokenizer, {name: record_fields(records) for name, records in splits.items()},
                   log, allow=cfg.data.allow_unknown_tokens, model=cfg.model.name)


def causal_lm(cfg: CausalLMRun, log: Callable[[str], None]) -> Setup:
    d = cfg.data
    model_path = resolve_config(cfg.model)
    tokenizer = load_tokenizer(model_path)
    renderer = renderer_for(cfg, tokenizer)
    if d.blocks:
        train, dev, info = _blocks(cfg, tokenizer, log)
    else:
        train_records, held = split_records(cfg)
        check_readable(cfg, tokenizer, {"train": train_records, "held-out": held}, log)
        train, stats = renderer.encode(train_records)
        dev, dev_stats = renderer.encode(held)
        log(f"data: {len(train)} train / {len(dev)} held-out examples; loss on {d.loss_on} tokens; "
            f"truncation {d.truncation} at {cfg.model.max_length}; "
            f"{'packing' if d.packing else 'padding per batch'}")
        for line in stats.lines():
            log(f"  train {line}")
        log(f"  held-out {dev_stats.lines()[1]}")
        info = {"train_stats": vars(stats) | {"lengths": None}}
    model = load_causal_lm(model_path, cfg.model.dropout)
    task = CausalLMTask(tokenizer, renderer, d.packing, d.samples, d.sample_tokens,
                        cfg.train.loss_chunk_size)
    return Setup(model, tokenizer, task, train, dev, model_path,
                 {"chat_template": d.template, **info})


def _blocks(cfg: CausalLMRun, tokenizer, log: Callable[[str], None]):
    """Continued pretraining data: (train blocks, held-out blocks, run.json info)."""
    d, size = cfg.data, cfg.model.max_length
    records = load_records(d.path, d.format, d.columns, d.roles, d.text_split, d.encoding)
    check_readable(cfg, tokenizer, {"train": records}, log)
    if d.eval_path:
        train, _, stats = encode_blocks(tokenizer, records, size, None)
        held = load_records(d.eval_path, d.format, d.columns, d.roles, d.text_split, d.encoding)
        dev = held_out_blocks(tokenizer, encode_blocks(tokenizer, held, size, None)[0].input_ids,
                              d.samples)
    else:
        train, dev, stats = encode_blocks(tokenizer, records, size, d.eval_size, d.samples)
    if d.max_examples:
        train = LMEncoded(train.input_ids[: d.max_examples], train.labels[: d.max_examples])
    log(f"data: {len(train)} train / {len(dev)} held-out blocks of {size} tokens "
        f"({'from ' + d.eval_path if d.eval_path else 'the last blocks of the text'}); "
        "every token trains")
    for line in stats.lines():
        log(f"  {line}")
    return train, dev, {"block_stats": vars(stats)}
