"""Setting up a masked-LM run: read the texts, encode, load the encoder and its MLM head."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tunelab.config import MaskedLMRun
from tunelab.data.masking import Masker, encode_texts
from tunelab.data.unlabeled import read_texts, split_texts
from tunelab.models import load_tokenizer
from tunelab.models.mlm import init_head, load_masked_lm, token_counts
from tunelab.recipes.base import Setup
from tunelab.runs.resolve import resolve_config
from tunelab.tasks.masked_lm import MaskedLMTask


def masker_for(cfg: MaskedLMRun, tokenizer) -> Masker:
    d = cfg.data
    return Masker.for_tokenizer(tokenizer, d.mask_rate, d.whole_word, d.mask_token_share,
                                d.random_token_share)


def masked_lm_setup(cfg: MaskedLMRun, log: Callable[[str], None]
                    ) -> tuple[Any, Any, MaskedLMTask, Any, Any, Path, dict[str, Any]]:
    """(model, tokenizer, task, train, held-out, model path, run.json info)."""
    d = cfg.data
    texts, held, source = split_texts(d)
    model_path = resolve_config(cfg.model)
    tokenizer = load_tokenizer(model_path)
    train, split = encode_texts(tokenizer, texts, cfg.model.max_length)
    dev, dev_split = encode_texts(tokenizer, held, cfg.model.max_length)
    log(f"data: {len(texts)} train texts -> {len(train)} windows of at most "
        f"{cfg.model.max_length} tokens ({split} texts longer than one window continue in the "
        f"next); held-out: {len(held)} texts -> {len(dev)} windows ({source})")
    log(f"masking: {d.mask_rate:.0%} of non-special tokens"
        + (", whole words (every sub-token of a chosen word)" if d.whole_word else "")
        + f", drawn anew each step (seed {cfg.train.seed}); chosen tokens: "
        f"{d.mask_token_share:.0%} [MASK], {d.random_token_share:.0%} random, "
        f"{1 - d.mask_token_share - d.random_token_share:.0%} kept; held-out masks fixed; "
        f"{train.mean_maskable * d.mask_rate:.2f} masked tokens per train window on average")
    model, missing = load_masked_lm(model_path, cfg.model.dropout)
    vocab = model.get_output_embeddings().weight.shape[0]
    for line in init_head(model, missing, token_counts(train.input_ids, train.words, vocab)):
        log(line)
    task = MaskedLMTask(masker_for(cfg, tokenizer), cfg.train.seed)
    info = {"mlm_head": "checkpoint" if not missing else "initialised",
            "windows": {"train": len(train), "held_out": len(dev), "split_texts": split + dev_split}}
    return model, tokenizer, task, train, dev, model_path, info


def evaluate_mlm(model, tokenizer, cfg: MaskedLMRun, data: str | None) -> dict[str, float]:
    """`tunelab eval` of a masked_lm run: held-out loss, perplexity and masked-token accuracy on
    the run's held-out texts (or another file read like data.path), with the run's fixed
    held-out masks."""
    import torch

    texts = read_texts(data, cfg.data) if data else split_texts(cfg.data)[1]
    encoded, _ = encode_texts(tokenizer, texts, cfg.model.max_length)
    scores = MaskedLMTask(masker_for(cfg, tokenizer), cfg.train.seed).evaluate(
        model, encoded, cfg.train.eval_batch_size, torch.device("cpu"))
    print(f"{data or 'held-out'}: {len(texts)} texts, {scores['tokens']} masked tokens")
    print(f"loss: {scores['loss']:.4f}")
    print(f"perplexity: {scores['perplexity']:.4f}")
    print(f"masked-token accuracy: {scores['masked_accuracy']:.4f}")
    return scores


def masked_lm(cfg: MaskedLMRun, log: Callable[[str], None]) -> Setup:
    """Masked-LM continued pretraining of an encoder on unlabeled text."""
    return Setup(*masked_lm_setup(cfg, log))
