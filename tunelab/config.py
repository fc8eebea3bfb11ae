"""RunConfig and its parts, and load_config(yaml, overrides): one validated object per run.

Everything a run needs is checked here, before any weights load. Errors name the dotted
key at fault and, for unknown keys, the closest valid one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator

from tunelab.augment.settings import AugmentConfig
from tunelab.config_messages import describe
from tunelab.config_tree import read_yaml, with_overrides
from tunelab.errors import ConfigError
from tunelab.methods.registry import METHODS
from tunelab.schema import StrictModel


class ModelConfig(StrictModel):
    name: str = "minilm"
    max_length: int = Field(128, ge=8, le=8192)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)  # overrides the base model's dropout rates
    # start the method's weights (and head) from a saved adapter, e.g. `tunelab meta`'s output
    init_adapter: str | None = None


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
    seed: int = 0


class SftDataConfig(StrictModel):
    """Instruction / chat / plain-text data for causal LM fine-tuning."""

    path: str  # a catalog name (alpaca_en, alpaca_zh, code_alpaca) or a .json/.jsonl file
    format: Literal["auto", "alpaca", "messages", "prompt_completion", "text"] = "auto"
    columns: dict[str, str] = {}  # our field name -> the file's, e.g. {output: answer}
    roles: dict[str, str] = {}  # the file's role name -> user / assistant / system
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


class ConllDataConfig(StrictModel):
    """Word-level tagged data in CoNLL columns for token classification (NER)."""

    train: str  # a catalog name (conll2003) or a CoNLL file path
    dev: str | None = None
    test: str | None = None
    token_column: int = Field(0, ge=0)  # 0-based column holding the word
    tag_column: int = Field(-1, ge=-1)  # 0-based column holding the tag; -1: the last one
    scheme: Literal["iob1", "iob2", "bioes"] = "iob2"  # the files' tagging; IOB2 internally
    label_all_subtokens: bool = False  # False: only a word's first sub-token trains
    dev_fraction: float = Field(0.1, gt=0.0, lt=1.0)  # used only when no dev file exists
    split_seed: int = 0
    max_train_examples: int | None = Field(None, ge=1)  # sentences
    max_eval_examples: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _distinct_columns(self) -> "ConllDataConfig":
        if self.token_column == self.tag_column:
            raise ValueError(f"token_column and tag_column are both {self.tag_column}; the words "
                             "and the tags must come from different columns")
        return self


class _RunBase(StrictModel):
    model: ModelConfig = ModelConfig()
    method: MethodConfig = Field(default_factory=lambda: METHODS["lora"].config_cls())
    train: TrainConfig = TrainConfig()
    output_dir: str = "runs/run"

    @model_validator(mode="before")
    @classmethod
    def _default_method_name(cls, data: Any) -> Any:
        """`method:` without a name means LoRA, the default method."""
        if isinstance(data, dict) and isinstance(data.get("method"), dict) \
                and "name" not in data["method"]:
            data = {**data, "method": {"name": "lora", **data["method"]}}
        return data

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _method_fits_run(self) -> "_RunBase":
        METHODS[self.method.name].check_run(self)
        return self

    @model_validator(mode="after")
    def _early_stopping_needs_eval(self) -> "_RunBase":
        if self.train.early_stopping is not None and self.train.eval_every is None:
            raise ValueError("train.early_stopping needs train.eval_every (evaluate every N steps)")
        return self


class ClassificationRun(_RunBase):
    task: Literal["classification"] = "classification"
    data: DataConfig

    @model_validator(mode="after")
    def _no_loss_chunks(self) -> "ClassificationRun":
        if self.train.loss_chunk_size is not None:
            raise ValueError("train.loss_chunk_size: only causal_lm runs have a vocabulary-sized "
                             "output layer to chunk; remove it")
        return self

    @model_validator(mode="after")
    def _metric_fits(self) -> "ClassificationRun":
        if self.train.metric in ("f1", "token_accuracy"):
            raise ValueError(f"train.metric: {self.train.metric} scores token classification; "
                             "classification runs use accuracy, macro_f1 or loss")
        return self


class TokenClassificationRun(_RunBase):
    task: Literal["token_classification"] = "token_classification"
    data: ConllDataConfig

    @model_validator(mode="after")
    def _no_loss_chunks(self) -> "TokenClassificationRun":
        if self.train.loss_chunk_size is not None:
            raise ValueError("train.loss_chunk_size: only causal_lm and translation runs have a "
                             "vocabulary-sized output layer to chunk; remove it")
        return self

    @model_validator(mode="after")
    def _metric_fits(self) -> "TokenClassificationRun":
        if self.train.metric in ("accuracy", "macro_f1"):
            raise ValueError(f"train.metric: {self.train.metric} scores sequence classification; "
                             "token_classification runs use f1 (entity-level), token_accuracy "
                             "or loss")
        return self


class CausalLMRun(_RunBase):
    task: Literal["causal_lm"] = "causal_lm"
    data: SftDataConfig

    @model_validator(mode="after")
    def _metric_is_loss(self) -> "CausalLMRun":
        if self.train.metric not in (None, "loss"):
            raise ValueError(f"train.metric: causal_lm runs are scored by held-out loss, not "
                             f"{self.train.metric}; remove train.metric or set it to loss")
        return self


class TranslationDataConfig(StrictModel):
    """Line-aligned parallel files `{split}.{lang}` in one directory (or the catalog's)."""

    path: str = "multi30k"  # a catalog name or a directory
    source_lang: str = "en"
    target_lang: str = "de"
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


class TranslationRun(_RunBase):
    task: Literal["translation"] = "translation"
    data: TranslationDataConfig = TranslationDataConfig()
    generation: Generation = Generation()

    @model_validator(mode="after")
    def _metric_is_loss(self) -> "TranslationRun":
        if self.train.metric not in (None, "loss"):
            raise ValueError(f"train.metric: translation runs select by held-out loss (BLEU and "
                             f"chrF are scored on the test split at the end), not "
                             f"{self.train.metric}; remove train.metric")
        return self


class MaskedLMDataConfig(StrictModel):
    """Unlabeled text for masked-LM continued pretraining of an encoder; masks drawn per step."""

    # a catalog name (sst2, ag_news: their text column, labels ignored; wiki_demo, c4_demo,
    # tinyshakespeare) or a .txt, .json/.jsonl, .tsv or .csv file
    path: str
    text_column: str | int | None = None  # None: the catalog's text column, else "text"
    header: bool | None = None  # .tsv/.csv: None means the catalog's setting, else True
    text_split: Literal["paragraph", "line", "file"] = "paragraph"  # documents in a .txt file
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


class MaskedLMRun(_RunBase):
    task: Literal["masked_lm"] = "masked_lm"
    data: MaskedLMDataConfig

    @model_validator(mode="after")
    def _metric_is_loss(self) -> "MaskedLMRun":
        if self.train.metric not in (None, "loss"):
            raise ValueError(f"train.metric: masked_lm runs are scored by held-out masked-token "
                             f"loss, not {self.train.metric}; remove train.metric or set it to loss")
        if self.train.loss_chunk_size is not None:
            raise ValueError("train.loss_chunk_size: masked_lm runs project only the masked "
                             "tokens onto the vocabulary already; remove it")
        return self


SEARCH_KEY = "search"  # a top-level section of hyperparameter ranges for `tunelab tune`


class ClassificationPart(StrictModel):
    """One sequence-classification task of a multitask run."""

    task: Literal["classification"] = "classification"
    data: DataConfig


class TokenClassificationPart(StrictModel):
    """One token-classification (NER) task of a multitask run."""

    task: Literal["token_classification"] = "token_classification"
    data: ConllDataConfig


TaskPart = Annotated[Union[ClassificationPart, TokenClassificationPart],
                     Field(discriminator="task")]


class MultiTaskRun(_RunBase):
    """One shared encoder (and adapter), one head per task; each batch comes from one task."""

    task: Literal["multitask"] = "multitask"
    tasks: dict[str, TaskPart]
    # proportional: each task's batches in proportion to its examples (one pass per epoch);
    # temperature: in proportion to examples ** (1 / temperature); round_robin: equal, in turn
    sampling: Literal["proportional", "temperature", "round_robin"] = "proportional"
    temperature: float = Field(2.0, gt=0.0)
    # shared: one encoder and one adapter for all tasks; per_task: one frozen base, an adapter each
    adapter: Literal["shared", "per_task"] = "shared"

    @model_validator(mode="before")
    @classmethod
    def _default_part_task(cls, data: Any) -> Any:
        """A task without `task:` is a classification task."""
        if isinstance(data, dict) and isinstance(data.get("tasks"), dict):
            data = {**data, "tasks": {k: {"task": "classification", **v} if isinstance(v, dict)
                                      and "task" not in v else v
                                      for k, v in data["tasks"].items()}}
        return data

    @model_validator(mode="after")
    def _checks(self) -> "MultiTaskRun":
        if len(self.tasks) < 2:
            raise ValueError(f"tasks: a multitask run needs at least two tasks (got "
                             f"{len(self.tasks)}); train a single task with task: classification "
                             "or token_classification")
        bad = [k for k in self.tasks if not re.fullmatch(r"[A-Za-z0-9_-]+", k)]
        if bad:
            raise ValueError(f"tasks.{bad[0]}: task names become directory names; use letters, "
                             "digits, _ and - only")
        if "temperature" in self.model_fields_set and self.sampling != "temperature":
            raise ValueError(f"temperature: only sampling: temperature uses it (sampling is "
                             f"{self.sampling}); remove it or set sampling: temperature")
        pissa = getattr(self.method, "init", None) == "pissa"
        if self.adapter == "per_task" and (pissa or not METHODS[self.method.name].saves_adapter):
            what = f"{self.method.name} with init: pissa" if pissa else self.method.name
            raise ValueError(f"adapter: per_task needs an adapter method that leaves the shared "
                             f"base weights frozen; {what} changes them; use adapter: shared")
        if self.train.metric is not None:
            raise ValueError("train.metric: a multitask run selects by the mean of its tasks' "
                             "metrics (accuracy; entity F1 for token classification); remove it")
        if self.train.loss_chunk_size is not None:
            raise ValueError("train.loss_chunk_size: only causal_lm and translation runs have a "
                             "vocabulary-sized output layer to chunk; remove it")
        packed = [k for k, part in self.tasks.items() if getattr(part.data, "packing", None)
                  is not None]
        if packed:
            raise ValueError(f"tasks.{packed[0]}.data.packing: multitask batches are not "
                             "packed (each is padded, from one task); remove it")
        if self.train.distributed == "fsdp" or self.train.gradient_checkpointing \
                or self.train.compile:
            raise ValueError("train.distributed: fsdp, train.gradient_checkpointing and "
                             "train.compile are not supported for multitask runs yet; remove them")
        return self


RunConfig = (ClassificationRun | CausalLMRun | TokenClassificationRun | TranslationRun
             | MaskedLMRun | MultiTaskRun)
RUN_CONFIG = Annotated[Union[ClassificationRun, CausalLMRun, TokenClassificationRun,
                             TranslationRun, MaskedLMRun, MultiTaskRun], Field(discriminator="task")]
_ADAPTER = TypeAdapter(RUN_CONFIG)
TASKS = ("classification", "causal_lm", "token_classification", "translation", "masked_lm",
         "multitask")


# ----------------------------------------------------------------------------- loading


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """Read YAML (or start from `base`), apply overrides, validate; raise ConfigError once."""
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        tree = read_yaml(path)
    tree.pop(SEARCH_KEY, None)  # `tunelab tune` reads it; every other command runs the config as is
    with_overrides(tree, overrides)
    return validate(tree, source=str(path) if path else "config")


def validate(tree: dict[str, Any], source: str = "config") -> RunConfig:
    if isinstance(tree, dict) and "task" not in tree:
        tree = {"task": "classification", **tree}
    try:
        return _ADAPTER.validate_python(tree)
    except ValidationError as exc:
        lines = [describe(err, RUN_CONFIG, TASKS) for err in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(dict.fromkeys(lines))) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
