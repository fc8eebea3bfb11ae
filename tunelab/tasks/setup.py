"""Per-task setup: read the data, load the matching model and tokenizer, encode.

Data are read before any weights load, so data errors surface in a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tunelab.config import (CausalLMRun, ClassificationRun, MaskedLMRun, RunConfig,
                            TokenClassificationRun, TranslationDataConfig, TranslationRun)
from tunelab.data import Splits, load_splits
from tunelab.data.blocks import encode_blocks, held_out_blocks
from tunelab.data.conll import TagSplits, load_conll_splits
from tunelab.data.parallel import CATALOG_SPLITS, corpus_dir, language_name, read_parallel
from tunelab.data.render import LMEncoded, Renderer
from tunelab.data.sft import load_records
from tunelab.data.splits import hold_out
from tunelab.errors import DataError
from tunelab.models import (is_encoder_decoder, load_causal_lm, load_classifier, load_seq2seq,
                            load_token_classifier, load_tokenizer, resolve)
from tunelab.tasks.causal_lm import CausalLMTask
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.token_classification import TokenClassificationTask
from tunelab.tasks.translation import DecoderTranslationTask, Seq2SeqTranslationTask


@dataclass
class Setup:
    model: Any
    tokenizer: Any
    task: Any
    train: Any
    dev: Any
    model_path: Path
    info: dict[str, Any] = field(default_factory=dict)  # stored in run.json


def classification(cfg: ClassificationRun, log: Callable[[str], None],
                   splits: Splits | None = None) -> Setup:
    splits = load_splits(cfg.data) if splits is None else splits
    model_path = resolve(cfg.model.name)
    for note in splits.notes:
        log(note)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev examples, "
        f"labels: {', '.join(splits.labels)}")
    tokenizer = load_tokenizer(model_path)
    model = load_classifier(model_path, splits.labels, cfg.model.dropout,
                            pad_token_id=tokenizer.pad_token_id)
    task = ClassificationTask(splits.labels, cfg.model.max_length, tokenizer.pad_token_id)
    if cfg.data.augment is None:
        train = task.encode(tokenizer, splits.train)
    else:  # copies drawn per epoch, the originals always kept
        from tunelab.augment.epochs import build

        train = build(cfg.data.augment, splits.train, tokenizer, model,
                      lambda examples: task.encode(tokenizer, examples), log)
    return Setup(model, tokenizer, task, train,
                 task.encode(tokenizer, splits.dev), model_path,
                 {"labels": splits.labels, "text_pair": splits.train[0].text_pair is not None})


def split_records(cfg: CausalLMRun) -> tuple[list, list]:
    """(train, held-out) records: eval_path if given, else a seeded random hold-out."""
    d = cfg.data
    records = load_records(d.path, d.format, d.columns, d.roles, d.text_split)
    if d.eval_path:
        held = load_records(d.eval_path, d.format, d.columns, d.roles, d.text_split)
    else:
        records, held = hold_out(records, d.eval_size, d.split_seed)
    if d.max_examples:
        records = records[: d.max_examples]
    return records, held


def renderer_for(cfg: CausalLMRun, tokenizer) -> Renderer:
    d = cfg.data
    return Renderer(tokenizer, d.loss_on, cfg.model.max_length, d.truncation, d.append_eos,
                    d.template)


def causal_lm(cfg: CausalLMRun, log: Callable[[str], None]) -> Setup:
    d = cfg.data
    model_path = resolve(cfg.model.name)
    tokenizer = load_tokenizer(model_path)
    renderer = renderer_for(cfg, tokenizer)
    if d.blocks:
        train, dev, info = _blocks(cfg, tokenizer, log)
    else:
        train_records, held = split_records(cfg)
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
    records = load_records(d.path, d.format, d.columns, d.roles, d.text_split)
    if d.eval_path:
        train, _, stats = encode_blocks(tokenizer, records, size, None)
        held = load_records(d.eval_path, d.format, d.columns, d.roles, d.text_split)
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


def translation_pairs(d: TranslationDataConfig) -> tuple[dict[str, str], dict[str, list]]:
    """The file split names and the (limited) pairs of train, dev and test."""
    root = corpus_dir(d.path)
    names = CATALOG_SPLITS.get(d.path.strip().lower(), {"train": "train", "dev": "dev",
                                                       "test": "test"})
    split = {"train": d.train_split or names["train"], "dev": d.dev_split or names["dev"],
             "test": d.test_split or names["test"]}
    limits = {"train": d.max_train_examples, "dev": d.max_dev_examples, "test": d.max_test_examples}
    return split, {k: read_parallel(root, split[k], d.source_lang, d.target_lang, limits[k])
                   for k in split}


def translation_task(cfg: TranslationRun, tokenizer, seq2seq: bool, log: Callable[[str], None]
                     ) -> tuple[Any, dict[str, list]]:
    """The task (holding the test pairs it scores) and the pairs of every split."""
    d = cfg.data
    root = corpus_dir(d.path)
    split, pairs = translation_pairs(d)
    log(f"data: {root} {d.source_lang}->{d.target_lang}: " + ", ".join(
        f"{len(pairs[k])} {k} ({split[k]})" for k in split) + " pairs")
    return translator(cfg, tokenizer, seq2seq, pairs["test"]), pairs


def translator(cfg: TranslationRun, tokenizer, seq2seq: bool, test: list, reverse: bool = False,
               gen: Any = None) -> Any:
    """The run's translation task (its prompt or prefix); `reverse` swaps the language names
    (back-translation through the same model)."""
    d = cfg.data
    source, target = (d.target_lang, d.source_lang) if reverse else (d.source_lang, d.target_lang)
    langs = {"source_name": language_name(source), "target_name": language_name(target)}
    gen = gen or cfg.generation
    if seq2seq:
        return Seq2SeqTranslationTask(tokenizer, cfg.model.max_length,
                                      lambda src: d.seq2seq_prefix.format(**langs) + src, test, gen)
    renderer = Renderer(tokenizer, "assistant", cfg.model.max_length, "right", True)
    return DecoderTranslationTask(tokenizer, renderer,
                                  lambda src: d.prompt.format(source=src, **langs), test, gen,
                                  cfg.train.loss_chunk_size)


def translation(cfg: TranslationRun, log: Callable[[str], None]) -> Setup:
    """Decoder-only models learn translation as a chat turn; encoder-decoder models directly."""
    model_path = resolve(cfg.model.name)
    tokenizer = load_tokenizer(model_path)
    seq2seq = is_encoder_decoder(model_path)
    task, pairs = translation_task(cfg, tokenizer, seq2seq, log)
    if seq2seq:
        train, dev = task.encode(pairs["train"]), task.encode(pairs["dev"])
        model = load_seq2seq(model_path, cfg.model.dropout)
        log("route: encoder-decoder (source in, target as labels)")
    else:
        train, stats = task.renderer.encode(task.records(pairs["train"]))
        dev, _ = task.renderer.encode(task.records(pairs["dev"]))
        model = load_causal_lm(model_path, cfg.model.dropout)
        log(f"route: decoder-only, a chat turn per pair (loss on the target); "
            f"{stats.lines()[1]}")
    return Setup(model, tokenizer, task, train, dev, model_path,
                 {"route": "seq2seq" if seq2seq else "causal_lm"})


def token_classification(cfg: TokenClassificationRun, log: Callable[[str], None],
                         splits: TagSplits | None = None) -> Setup:
    d = cfg.data
    splits = load_conll_splits(d) if splits is None else splits
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


def masked_lm(cfg: MaskedLMRun, log: Callable[[str], None]) -> Setup:
    """Masked-LM continued pretraining of an encoder on unlabeled text."""
    from tunelab.tasks.mlm_setup import masked_lm_setup

    return Setup(*masked_lm_setup(cfg, log))


def multitask(cfg: Any, log: Callable[[str], None]) -> Setup:
    from tunelab.tasks.multitask_setup import multitask as setup_multitask

    return setup_multitask(cfg, log)


SETUPS: dict[str, Callable[[Any, Callable[[str], None]], Setup]] = {
    "classification": classification, "causal_lm": causal_lm,
    "token_classification": token_classification, "translation": translation,
    "masked_lm": masked_lm, "multitask": multitask}


# tasks whose setup takes ready-made splits (cross-validation folds)
TAKE_SPLITS = ("classification", "token_classification")


def setup(cfg: RunConfig, log: Callable[[str], None], splits: Any = None) -> Setup:
    if splits is None:
        return SETUPS[cfg.task](cfg, log)
    if cfg.task not in TAKE_SPLITS:
        raise DataError(f"task {cfg.task}: given splits are supported for "
                        f"{' and '.join(TAKE_SPLITS)} only")
    return SETUPS[cfg.task](cfg, log, splits)
