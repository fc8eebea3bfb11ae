"""The augmented training set: on the fly (new copies each epoch) or written to a file.

Rows are every original example (always kept, unchanged), then its EDA/mask copies, then
its back-translation. The loop asks `for_epoch(e)` for the encoded rows of epoch e; the
number of rows is the same every epoch, so the batches per epoch are too.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from tunelab.config.augment import AugmentConfig
from tunelab.data.augment.augmenter import Augmenter, Copy
from tunelab.data.augment.synonyms import EmbeddingSynonyms
from tunelab.data.batching import Encoded
from tunelab.data.readers import Example
from tunelab.errors import ConfigError


class AugmentedTrain:
    def __init__(self, originals: list[Example], augmenter: Augmenter,
                 encode: Callable[[list[Example]], Encoded] | None, paraphrases: list[Copy]):
        """`encode` tokenises rows for training; None when the rows are only written out."""
        self.originals, self.augmenter, self.encode = originals, augmenter, encode
        self.paraphrases = paraphrases
        self._encoded: dict[int, Encoded] = {}

    def __len__(self) -> int:
        return len(self.originals) * (1 + self.augmenter.cfg.copies) + len(self.paraphrases)

    def rows(self, epoch: int) -> list[Copy]:
        rows = [Copy(e, i, "original", ()) for i, e in enumerate(self.originals)]
        for i, e in enumerate(self.originals):
            rows += self.augmenter.copies(e, i, epoch)
        return rows + self.paraphrases

    def for_epoch(self, epoch: int) -> Encoded:
        """The encoded rows of `epoch`; the last two epochs are cached (a step may span both)."""
        if not self.augmenter.cfg.per_epoch:
            epoch = 0
        assert self.encode is not None, "built without an encoder (materialising only)"
        if epoch not in self._encoded:
            self._encoded = {k: v for k, v in self._encoded.items() if k == epoch - 1}
            self._encoded[epoch] = self.encode([r.example for r in self.rows(epoch)])
        return self._encoded[epoch]

    def lengths(self) -> list[int]:
        return self.for_epoch(0).lengths()


def no_synonyms(word: str) -> tuple[str, ...]:
    return ()


Paraphrase = Callable[[list[str], Callable[[str], None]], list[str]]


def build(cfg: AugmentConfig, originals: list[Example], tokenizer, model: Any,
          encode: Callable[[list[Example]], Encoded] | None, log: Callable[[str], None] = print,
          paraphrase: Paraphrase | None = None) -> AugmentedTrain:
    """Synonyms from `model`'s input embeddings, the augmenter, and the back-translations
    (`paraphrase`: texts through a translation run and back; the recipe builds it)."""
    needs_synonyms = cfg.ops.synonym_replacement > 0 or cfg.ops.random_insertion > 0
    augmenter = Augmenter(cfg, no_synonyms, getattr(tokenizer, "mask_token", None))
    if cfg.copies and needs_synonyms:
        table = EmbeddingSynonyms.from_model(tokenizer, model, cfg.synonyms.neighbours,
                                             cfg.synonyms.min_similarity)
        words = augmenter.words_of(originals)
        table.prepare(words)
        augmenter.synonyms = table
        covered = sum(1 for w in words if table(w))
        log(f"augment: synonyms from the model's input embeddings: {covered} of {len(words)} "
            f"distinct words have a neighbour (cosine >= {cfg.synonyms.min_similarity})")
    if cfg.back_translation and paraphrase is None:
        raise ConfigError("data.augment.back_translation: this command cannot load translation "
                          "runs; remove back_translation or run `tunelab train`")
    paraphrases = back_translations(originals, paraphrase, log) if paraphrase else []
    train = AugmentedTrain(originals, augmenter, encode, paraphrases)
    log(f"augment: {len(originals)} originals + {cfg.copies} copies each"
        + (f" + {len(paraphrases)} back-translations" if cfg.back_translation else "")
        + f" = {len(train)} training rows per epoch; ops "
        + ", ".join(f"{op} {getattr(cfg.ops, op)}" for op in augmenter.enabled)
        + f" ({'one per copy' if cfg.combine == 'one' else 'all in turn'}), seed {cfg.seed}, "
        + ("new copies each epoch" if cfg.per_epoch else "the same copies every epoch"))
    return train


def back_translations(originals: list[Example], paraphrase: Paraphrase,
                      log: Callable[[str], None]) -> list[Copy]:
    """One paraphrase per original; empty ones and those equal to their original are dropped."""
    texts = paraphrase([e.text for e in originals], log)
    out = []
    for i, (e, text) in enumerate(zip(originals, texts)):
        if text.strip() and " ".join(text.split()).lower() != " ".join(e.text.split()).lower():
            out.append(Copy(replace(e, text=text, where=f"{e.where} (back-translation)"), i,
                            "back_translation", ("back_translation",)))
    log(f"augment: {len(out)} of {len(originals)} back-translations differ from their original "
        "and are kept")
    return out


def write_jsonl(train: AugmentedTrain, path: Path, epoch: int = 0) -> dict[str, int]:
    """Originals and their copies, one JSON object a line; `augmented` and `source` say which
    is which and `origin` points at the original's row. Returns the count per source."""
    counts: dict[str, int] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in train.rows(epoch):
            row = {"text": r.example.text, "label": r.example.label}
            if r.example.text_pair is not None:
                row["text_pair"] = r.example.text_pair
            row |= {"augmented": r.source != "original", "source": r.source,
                    "ops": list(r.ops), "origin": r.origin}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[r.source] = counts.get(r.source, 0) + 1
    return counts
