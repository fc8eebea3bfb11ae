"""The sections of a run config (model, data, method, train): typed, strict, each key checked.

The run types that combine them, and loading, live in tunelab.config.run.
"""

from __future__ import annotations

import codecs
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, field_validator, model_validator

from tunelab.config.augment import AugmentConfig
from tunelab.methods.registry import METHODS
from tunelab.schema import StrictModel

__all__ = ["ModelConfig", "ColumnMap", "DataConfig", "MethodConfig", "EarlyStopping",
           "TrainConfig", "SftDataConfig", "ConllDataConfig", "TranslationDataConfig",
           "Generation", "MaskedLMDataConfig"]


def _known_encoding(v: str) -> str:
    """data.encoding: a text encoding Python knows (utf-8, latin-1, cp1252, utf-16, ...)."""
    try:
        codecs.lookup(v)
    except LookupError:
        raise ValueError(f"unknown text encoding {v!r} (e.g. utf-8, latin-1, cp1252, "
                         "utf-16)") from None
    return v


# the data files' text encoding; utf-8 reads a leading byte-order mark too
Encoding = Annotated[str, AfterValidator(_known_encoding)]


class ModelConfig(StrictModel):
    name: str = "minilm"
    max_length: int = Field(128, ge=8, le=8192)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)  # overrides the base model's dropout rates
    # start the method's weights (and head) from a saved adapter, e.g. `tunelab meta`'s output
    init_adapter: str | None = None
    # a smaller model from this one: k keeps the first k transformer layers (the top ones are
    # dropped), a list names the layers kept (e.g. [0, 2, 4]); built once as a plain model
    # directory (tunelab/models/student.py), a student for distill:
    keep_layers: int | list[int] | None = None
    # store the frozen base's Linear weights in 4 or 8 bits (QLoRA; tunelab/models/quantize.py)
    quantize: Literal["nf4", "fp4", "int8"] | None = None
    compute_dtype: Literal["float32", "bfloat16"] = "float32"  # what quantized layers compute in
    # what a classifier's head reads: None/"cls" the model's own (BERT: its pooler over the
    # first token), "mean" the average of the last layer over real tokens, which is what
    # sentence-transformers checkpoints such as MiniLM were trained for (models/pooling.py)
    pooling: Literal["cls", "mean"] | None = None

    @field_validator("keep_layers")
    @classmethod
    def _some_layer(cls, v: int | list[int] | None) -> int | list[int] | None:
        if v is not None and (v == [] or (isinstance(v, int) and v < 1)):
            raise ValueError(f"{v!r} keeps no layer; give a count >= 1 or a list of layer indices")
        return v


class ColumnMap(StrictModel):
    """Column names (files with a header) or 0-based indices (files without one)."""

    text: str | int = "text"
    text_pair: str | int | None = None
    label: str | int = "label"


class DataConfig(StrictModel):
    train: str  # a catalog name (sst2, ag_news) or a file path
    dev: str | None = None
    test: str | None = None
    format: Literal["auto", "tsv", "csv", "jsonl"] = "auto"
    header: bool | None = None  # None: the catalog's setting, else True for tsv/csv
    columns: ColumnMap | None = None
    encoding: Encoding = "utf-8"
    dev_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # used only when no dev file exists
    split_seed: int = 0
    max_train_examples: int | None = Field(None, ge=1)
    max_eval_examples: int | None = Field(None, ge=1)
    per_class: int | None = Field(None, ge=1)  # few-shot: a seeded k training examples per label
    augment: AugmentConfig | None = None  # training examples only; see tunelab/augment/
    # random training batches packed into rows, no padding (tunelab/data/packing.py). None:
    # where the model reads them (BERT-style classifiers), else train.bucket_by_length;
    # true: packed, or an error saying why not
    packing: bool | None = None
    # run on when over 30% of the text's tokens are the tokenizer's unknown token (the model's
    # vocabulary lacks the script); without it such data stop the run
    allow_unknown_tokens: bool = False


MethodConfig = Annotated[
    Union[tuple(m.config_cls for m in METHODS.values())],  # type: ignore[misc]
    Field(discriminator="name"),
]


class EarlyStopping(StrictModel):
    patience: int = Field(3, ge=1)  # evaluations without improvement before stopping
    min_delta: float = Field(0.0, ge=0.0)


class TrainConfig(StrictModel):
    epochs: float = Field(1.0, gt=0.0)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; overrides epochs
    batch_size: int = Field(32, ge=1)  # examples per micro-batch
    grad_accum: int = Field(1, ge=1)
    bucket_by_length: bool = True  # batches of similar length: almost no padding
    optimizer: Literal["adamw", "sgd", "rmsprop"] = "adamw"
    lr: float = Field(5e-4, gt=0.0, le=1.0)
    # the task head (classifier, tagger) trains at lr x this; the adapter at lr
    head_lr_scale: float = Field(1.0, gt=0.0, le=100.0)
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd and rmsprop
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    warmup_ratio: float = Field(0.06, ge=0.0, lt=1.0)
    warmup_steps: int | None = Field(None, ge=0)  # overrides warmup_ratio
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on a GPU that has it
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    loss_chunk_size: int | None = Field(None, ge=1)  # causal LM: output layer + loss N tokens at a time
    distributed: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: replicate, or shard the model
    compile: bool = False  # torch.compile the model's loss (dynamic shapes); pays off on long runs
    eval_every: int | None = Field(None, ge=1)  # steps; the run always evaluates at the end
    eval_at_start: bool = True  # score the untrained model first (step 0), the baseline
    eval_batch_size: int = Field(64, ge=1)
    # None: the task's default; accuracy/macro_f1 classify, f1/token_accuracy tag tokens
    metric: Literal["accuracy", "macro_f1", "f1", "token_accuracy", "loss"] | None = None
    early_stopping: EarlyStopping | None = None
    load_best_at_end: bool = True
    checkpoint_every: int | None = Field(200, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    # experiment trackers fed what metrics.jsonl gets (tunelab/train/trackers.py)
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = []
    seed: int = 0


class SftDataConfig(StrictModel):
    """Instruction / chat / plain-text data for causal LM fine-tuning."""

    path: str  # a catalog name (alpaca_en, alpaca_zh, code_alpaca) or a .json/.jsonl file
    format: Literal["auto", "alpaca", "messages", "prompt_completion", "text"] = "auto"
    columns: dict[str, str] = {}  # our field name -> the file's, e.g. {output: answer}
    roles: dict[str, str] = {}  # the file's role name -> user / assistant / system
    encoding: Encoding = "utf-8"
    template: str | None = None  # a Jinja chat template file; default: the tokenizer's own
    loss_on: Literal["assistant", "last_turn", "all"] = "assistant"
    truncation: Literal["right", "drop"] = "right"  # over model.max_length: cut, or drop
    append_eos: bool = True  # prompt_completion / text: end each example with EOS (trained)
    packing: bool = False  # one row per batch, attention confined to each example
    # continued pretraining: documents joined with EOS, cut into model.max_length blocks,
    # every token trained; the held-out set is the last eval_size blocks
    blocks: bool = False
    text_split: Literal["paragraph", "line", "file"] = "paragraph"  # documents in a .txt file
    eval_path: str | None = None
    eval_size: int = Field(40, ge=1)  # held out from `path` when eval_path is not given
    split_seed: int = 0
    max_examples: int | None = Field(None, ge=1)  # train on the first N (after the split)
    samples: int = Field(3, ge=0)  # held-out prompts generated at each evaluation
    sample_tokens: int = Field(64, ge=1)
    # run on when over 30% of the text's tokens are the tokenizer's unknown token (the model's
    # vocabulary lacks the script); without it such data stop the run
    allow_unknown_tokens: bool = False


class ConllDataConfig(StrictModel):
    """Word-level tagged data in CoNLL columns for token classification (NER)."""

    train: str  # a catalog name (conll2003) or a CoNLL file path
    dev: str | None = None
    test: str | None = None
    token_column: int = Field(0, ge=0)  # 0-based column holding the word
    tag_column: int = Field(-1, ge=-1)  # 0-based column holding the tag; -1: the last one
    scheme: Literal["iob1", "iob2", "bioes"] = "iob2"  # the files' tagging; IOB2 internally
    encoding: Encoding = "utf-8"
    label_all_subtokens: bool = False  # False: only a word's first sub-token trains
    dev_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # used only when no dev file exists
    split_seed: int = 0
    max_train_examples: int | None = Field(None, ge=1)  # sentences
    max_eval_examples: int | None = Field(None, ge=1)
    # run on when over 30% of the text's tokens are the tokenizer's unknown token (the model's
    # vocabulary lacks the script); without it such data stop the run
    allow_unknown_tokens: bool = False

    @model_validator(mode="after")
    def _distinct_columns(self) -> "ConllDataConfig":
        if self.token_column == self.tag_column:
            raise ValueError(f"token_column and tag_column are both {self.tag_column}; the words "
                             "and the tags must come from different columns")
        return self


class TranslationDataConfig(StrictModel):
    """Line-aligned parallel files `{split}.{lang}` in one directory (or the catalog's)."""

    path: str = "multi30k"  # a catalog name or a directory
    source_lang: str = "en"
    target_lang: str = "de"
    encoding: Encoding = "utf-8"
    train_split: str | None = None  # None: the catalog's names (Multi30k: train, val,
    dev_split: str | None = None  # test_2016_flickr), else train, dev, test
    test_split: str | None = None
    max_train_examples: int | None = Field(None, ge=1)
    max_dev_examples: int | None = Field(200, ge=1)  # held-out loss at every evaluation
    max_test_examples: int | None = Field(200, ge=1)  # BLEU / chrF before and after training
    # decoder-only models: the user turn of a chat; encoder-decoder models: the source prefix
    prompt: str = "Translate this sentence from {source_name} to {target_name}:\n{source}"
    seq2seq_prefix: str = "translate {source_name} to {target_name}: "

    @field_validator("prompt")
    @classmethod
    def _has_source(cls, v: str) -> str:
        if "{source}" not in v:
            raise ValueError("must contain {source}, where the sentence goes")
        return v


class Generation(StrictModel):
    num_beams: int = Field(1, ge=1, le=16)  # 1: greedy
    max_new_tokens: int = Field(64, ge=1, le=1024)
    batch_size: int = Field(16, ge=1)


class MaskedLMDataConfig(StrictModel):
    """Unlabeled text for masked-LM continued pretraining of an encoder; masks drawn per step."""

    # a catalog name (sst2, ag_news: their text column, labels ignored; wiki_demo, c4_demo,
    # tinyshakespeare) or a .txt, .json/.jsonl, .tsv or .csv file
    path: str
    text_column: str | int | None = None  # None: the catalog's text column, else "text"
    header: bool | None = None  # .tsv/.csv: None means the catalog's setting, else True
    text_split: Literal["paragraph", "line", "file"] = "paragraph"  # documents in a .txt file
    encoding: Encoding = "utf-8"
    eval_path: str | None = None  # held-out texts (same column); default: eval_size from path
    eval_size: int = Field(200, ge=1)
    split_seed: int = 0
    max_examples: int | None = Field(None, ge=1)  # train on the first N texts (after the split)
    mask_rate: float = Field(0.15, gt=0.0, lt=1.0)  # share of (non-special) tokens predicted
    whole_word: bool = False  # mask every sub-token of a chosen word together
    mask_token_share: float = Field(0.8, ge=0.0, le=1.0)  # chosen tokens shown as [MASK]
    random_token_share: float = Field(0.1, ge=0.0, le=1.0)  # ... as a random token (rest: kept)

    @model_validator(mode="after")
    def _shares(self) -> "MaskedLMDataConfig":
        if self.mask_token_share + self.random_token_share > 1.0 + 1e-9:
            raise ValueError(f"data.mask_token_share ({self.mask_token_share}) + "
                             f"data.random_token_share ({self.random_token_share}) exceed 1; the "
                             "rest of the chosen tokens are kept unchanged")
        return self
