"""The run types (one per task) built from the config sections; loading lives in config.load.

Everything a run needs is checked here, before any weights load. Errors name the dotted
key at fault and, for unknown keys, the closest valid one.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from tunelab.config.distill import DistillConfig
from tunelab.config.privacy import PrivacyConfig, check_private_run
from tunelab.config.vision import ImageDataConfig
from tunelab.config.quantize import check_quantized_run
from tunelab.config.sections import (
    ConllDataConfig,
    DataConfig,
    Generation,
    MaskedLMDataConfig,
    MethodConfig,
    ModelConfig,
    SftDataConfig,
    TrainConfig,
    TranslationDataConfig,
)
from tunelab.methods.registry import METHODS
from tunelab.schema import StrictModel

__all__ = ["ClassificationRun", "TokenClassificationRun", "CausalLMRun", "TranslationRun",
           "MaskedLMRun", "SEARCH_KEY", "ClassificationPart", "TokenClassificationPart",
           "TaskPart", "MultiTaskRun", "RUN_TYPES", "RunConfig", "RUN_CONFIG", "TASKS",
           "ImageClassificationRun"]


class _RunBase(StrictModel):
    model: ModelConfig = ModelConfig()
    method: MethodConfig = Field(default_factory=lambda: METHODS["lora"].config_cls())
    train: TrainConfig = TrainConfig()
    privacy: PrivacyConfig | None = None  # DP-SGD (tunelab/train/privacy.py)
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
    def _quantize_fits_run(self) -> "_RunBase":
        check_quantized_run(self)
        return self

    @model_validator(mode="after")
    def _privacy_fits_run(self) -> "_RunBase":
        """DP-SGD refuses what it cannot make private; data.packing unset means unpacked."""
        if self.privacy is not None:
            check_private_run(self)
            data = getattr(self, "data", None)
            if data is not None and "packing" in type(data).model_fields and data.packing is None:
                data.packing = False  # written to config.yaml: the effective choice, explicit
        return self

    @model_validator(mode="after")
    def _pooling_is_for_classifiers(self) -> "_RunBase":
        if self.model.pooling == "mean" and getattr(self, "task", None) != "classification":
            raise ValueError(f"model.pooling: mean is for task: classification (what a "
                             f"sequence classifier's head reads); a {self.task} run has no "
                             "pooled vector. Remove model.pooling")
        return self

    @model_validator(mode="after")
    def _early_stopping_needs_eval(self) -> "_RunBase":
        if self.train.early_stopping is not None and self.train.eval_every is None:
            raise ValueError("train.early_stopping needs train.eval_every (evaluate every N steps)")
        return self


class ClassificationRun(_RunBase):
    task: Literal["classification"] = "classification"
    data: DataConfig
    distill: DistillConfig | None = None  # learn from a trained teacher run's outputs

    @model_validator(mode="after")
    def _cached_teacher_needs_fixed_data(self) -> "ClassificationRun":
        if self.distill and self.distill.teacher_logits == "cache" and self.data.augment:
            raise ValueError("distill.teacher_logits: cache scores each training example once, "
                             "but data.augment makes new copies every epoch; set "
                             "distill.teacher_logits: on_the_fly")
        return self

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


class ImageClassificationRun(_RunBase):
    """An image classifier (ViT, ConvNeXt, ResNet: AutoModelForImageClassification) on image
    folders, preprocessed by the model's own image processor (tunelab/data/images.py)."""

    task: Literal["image_classification"] = "image_classification"
    data: ImageDataConfig

    @model_validator(mode="after")
    def _fits_images(self) -> "ImageClassificationRun":
        if self.train.metric in ("f1", "token_accuracy"):
            raise ValueError(f"train.metric: {self.train.metric} scores token classification; "
                             "image_classification runs use accuracy, macro_f1 or loss")
        if self.train.loss_chunk_size is not None:
            raise ValueError("train.loss_chunk_size: only causal_lm runs have a vocabulary-sized "
                             "output layer to chunk; remove it")
        if self.model.keep_layers is not None:
            raise ValueError("model.keep_layers: image models are not cut into students yet; "
                             "remove it")
        return self


class TokenClassificationRun(_RunBase):
    task: Literal["token_classification"] = "token_classification"
    data: ConllDataConfig
    distill: DistillConfig | None = None  # learn from a trained teacher run's outputs

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
        unused = self.temperature != type(self).model_fields["temperature"].default
        if unused and self.sampling != "temperature":  # a printed config (default 2.0) reloads
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


# The run types, once: the union, the tagged union pydantic validates, and the task names.
RUN_TYPES = (ClassificationRun, CausalLMRun, TokenClassificationRun, TranslationRun, MaskedLMRun,
             MultiTaskRun, ImageClassificationRun)
RunConfig = Union[RUN_TYPES]  # type: ignore[valid-type]
RUN_CONFIG = Annotated[RunConfig, Field(discriminator="task")]
TASKS = tuple(t.model_fields["task"].default for t in RUN_TYPES)
