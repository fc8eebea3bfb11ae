"""Back-translation: source -> pivot -> source through `tunelab train` translation runs.

The first run translates into the pivot language (its data.target_lang). The way back is a
second run (pivot -> source), or the first run's own model asked for the reverse direction
by its prompt (decoder route) or prefix (encoder-decoder route) with the languages swapped;
the latter only works as well as the model translates that way. Decoding is greedy or beam
search, never sampled, so the paraphrases are the same every time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from tunelab.config import Generation, TranslationRun
from tunelab.config.augment import AugmentConfig, BackTranslation
from tunelab.data.augment.epochs import Paraphrase
from tunelab.errors import ConfigError
from tunelab.recipes.translation import translator
from tunelab.runs.layout import load_run_config
from tunelab.runs.trained import load_trained


def load_translation_run(run_dir: str, key: str) -> tuple[Any, Any, Any, bool]:
    """(model, tokenizer, validated config, seq2seq) of a finished translation run."""
    path = Path(run_dir).expanduser()
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{key}: {path} is not a tunelab run directory (no config.yaml); give "
                          "the output_dir of a `tunelab train` translation run")
    cfg = load_run_config(path)
    if not isinstance(cfg, TranslationRun):
        raise ConfigError(f"{key}: {path} is a {cfg.task} run; back-translation needs a "
                          "translation run (task: translation)")
    model, tokenizer, info = load_trained(path)
    return model, tokenizer, cfg, info.get("route") == "seq2seq"


class BackTranslator:
    def __init__(self, cfg: BackTranslation, device: torch.device | None = None):
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        gen = Generation(num_beams=cfg.num_beams, max_new_tokens=cfg.max_new_tokens,
                         batch_size=cfg.batch_size)
        model, tok, run, seq2seq = load_translation_run(cfg.run, "data.augment.back_translation.run")
        d = run.data
        if cfg.pivot is not None and cfg.pivot != d.target_lang:
            raise ConfigError(f"data.augment.back_translation.pivot: {cfg.pivot!r}, but the run "
                              f"{cfg.run} translates {d.source_lang} -> {d.target_lang}; set "
                              f"pivot: {d.target_lang} or use a run into {cfg.pivot}")
        self.source, self.pivot = d.source_lang, d.target_lang
        self.there = (model.to(self.device), translator(run, tok, seq2seq, [], gen=gen))
        if cfg.back_run is None:
            self.back = (self.there[0], translator(run, tok, seq2seq, [], reverse=True, gen=gen))
        else:
            bmodel, btok, brun, bseq = load_translation_run(
                cfg.back_run, "data.augment.back_translation.back_run")
            b = brun.data
            if (b.source_lang, b.target_lang) != (d.target_lang, d.source_lang):
                raise ConfigError(f"data.augment.back_translation.back_run: {cfg.back_run} "
                                  f"translates {b.source_lang} -> {b.target_lang}; the way back "
                                  f"must be {d.target_lang} -> {d.source_lang}")
            self.back = (bmodel.to(self.device), translator(brun, btok, bseq, [], gen=gen))

    def paraphrase(self, texts: list[str], log: Callable[[str], None] = print) -> list[str]:
        """Each text through the pivot and back (greedy or beam search: deterministic)."""
        log(f"back-translation: {len(texts)} texts {self.source} -> {self.pivot} -> {self.source}")
        pivot = self.there[1].translate(self.there[0], texts, self.device)
        return self.back[1].translate(self.back[0], pivot, self.device)


def paraphraser(cfg: AugmentConfig) -> Paraphrase | None:
    """Back-translation as the augmenter calls it, or None when the config asks for none."""
    return BackTranslator(cfg.back_translation).paraphrase if cfg.back_translation else None
