"""Translation: parallel pairs, as a chat turn for decoders or directly for encoder-decoders."""

from __future__ import annotations

from typing import Any, Callable

from tunelab.config import TranslationDataConfig, TranslationRun
from tunelab.data.parallel import CATALOG_SPLITS, corpus_dir, language_name, read_parallel
from tunelab.data.render import Renderer
from tunelab.models import is_encoder_decoder, load_causal_lm, load_seq2seq, load_tokenizer
from tunelab.recipes.base import Setup
from tunelab.runs.resolve import resolve_config
from tunelab.tasks.translation import DecoderTranslationTask, Seq2SeqTranslationTask


def translation_pairs(d: TranslationDataConfig) -> tuple[dict[str, str], dict[str, list]]:
    """The file split names and the (limited) pairs of train, dev and test."""
    root = corpus_dir(d.path)
    names = CATALOG_SPLITS.get(d.path.strip().lower(), {"train": "train", "dev": "dev",
                                                       "test": "test"})
    split = {"train": d.train_split or names["train"], "dev": d.dev_split or names["dev"],
             "test": d.test_split or names["test"]}
    limits = {"train": d.max_train_examples, "dev": d.max_dev_examples, "test": d.max_test_examples}
    return split, {k: read_parallel(root, split[k], d.source_lang, d.target_lang, limits[k],
                                    d.encoding) for k in split}


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
    model_path = resolve_config(cfg.model)
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
