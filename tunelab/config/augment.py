"""The `data.augment` section: which operations, at what rates, how many copies, which seed.

Kept apart from the augmentation code so that tunelab.config can import it without
pulling in jieba or torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunelab.schema import StrictModel


class Operations(StrictModel):
    """Per-word rates; 0 turns an operation off (EDA, Wei & Zou 2019, plus masking)."""

    synonym_replacement: float = Field(0.1, ge=0.0, le=1.0)  # share of words with a synonym replaced
    random_insertion: float = Field(0.1, ge=0.0, le=1.0)  # synonyms inserted per word
    random_swap: float = Field(0.1, ge=0.0, le=1.0)  # swaps of two words, per word
    random_deletion: float = Field(0.1, ge=0.0, le=1.0)  # share of words deleted
    mask: float = Field(0.0, ge=0.0, le=1.0)  # share of words replaced by the mask token

    def enabled(self) -> list[str]:
        return [name for name, rate in self.model_dump().items() if rate > 0]


class Synonyms(StrictModel):
    """Synonyms are nearest neighbours of a word in the model's own input embeddings."""

    neighbours: int = Field(10, ge=1, le=100)  # candidates kept per word
    min_similarity: float = Field(0.45, ge=-1.0, le=1.0)  # cosine; below it a neighbour is dropped


class BackTranslation(StrictModel):
    """One paraphrase per example: source -> pivot -> source through translation runs."""

    run: str  # a `tunelab train` translation run directory, source -> pivot language
    back_run: str | None = None  # pivot -> source run; None: `run`'s model with the prompt reversed
    pivot: str | None = None  # if given, must be `run`'s target language (a check)
    num_beams: int = Field(1, ge=1, le=16)
    max_new_tokens: int = Field(96, ge=1, le=1024)
    batch_size: int = Field(16, ge=1)


class AugmentConfig(StrictModel):
    copies: int = Field(1, ge=0, le=64)  # augmented copies per training example per epoch
    seed: int = 0
    ops: Operations = Operations()
    # one: each copy applies one enabled operation picked at random (as EDA does);
    # all: each copy applies every enabled operation in turn
    combine: Literal["one", "all"] = "one"
    per_epoch: bool = True  # draw new copies each epoch (a function of seed and epoch)
    language: Literal["auto", "en", "zh"] = "auto"  # auto: Chinese if the text has CJK characters
    synonyms: Synonyms = Synonyms()
    back_translation: BackTranslation | None = None

    @model_validator(mode="after")
    def _does_something(self) -> "AugmentConfig":
        if self.copies == 0 and self.back_translation is None:
            raise ValueError("data.augment: copies is 0 and there is no back_translation, so "
                             "nothing would be added; set copies >= 1 or remove data.augment")
        if self.copies > 0 and not self.ops.enabled():
            raise ValueError("data.augment.ops: every rate is 0; give at least one operation a "
                             "rate above 0 (e.g. random_swap: 0.1) or set copies: 0")
        return self
