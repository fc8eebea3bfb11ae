"""The `tunelab continual` config: a base model, a method, one train section, the stages in
order, and the strategy that fights forgetting between them."""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from tunelab.config import (
    ClassificationPart,
    MethodConfig,
    ModelConfig,
    TokenClassificationPart,
    TrainConfig,
    validate,
)
from tunelab.config.load import note_to_stderr
from tunelab.config.messages import describe
from tunelab.config.quantize import refuse_quantize
from tunelab.config.switch import apply_overrides
from tunelab.config.tree import read_yaml
from tunelab.errors import ConfigError
from tunelab.methods import METHODS
from tunelab.schema import StrictModel


class _StageFields(StrictModel):
    name: str  # the stage's directory name and its column in the accuracy matrix
    # stages with the same head share it (domain-incremental: new data of one task, same
    # labels); None: a head of the stage's own (task-incremental, the stage known at test time)
    head: str | None = None

    @property
    def head_name(self) -> str:
        return self.head or self.name


class ClassificationStage(_StageFields, ClassificationPart):
    pass


class TokenClassificationStage(_StageFields, TokenClassificationPart):
    pass


Stage = Annotated[Union[ClassificationStage, TokenClassificationStage],
                  Field(discriminator="task")]


class NaiveStrategy(StrictModel):
    """Plain sequential fine-tuning: the baseline every other strategy is measured against."""
    name: Literal["naive"] = "naive"


class ReplayStrategy(StrictModel):
    """A seeded buffer of `per_stage` training examples of every earlier stage; each
    micro-batch of the new stage is trained together with `batch` examples drawn from it."""
    name: Literal["replay"] = "replay"
    per_stage: int = Field(64, ge=1)
    batch: int | None = Field(None, ge=1)  # None: a quarter of train.batch_size (at least 1)


class EwcStrategy(StrictModel):
    """Elastic weight consolidation (Kirkpatrick et al. 2017): after each stage the diagonal
    empirical Fisher of the trainable parameters on `fisher_examples` of its training examples;
    later stages pay strength/2 * sum F (w - w_stage)^2, added to the mean loss. A stage fit
    to near-zero loss has a near-zero empirical Fisher, so by default each stage's Fisher is
    divided by its mean over all trainable weights (`normalize`): strength then weighs the
    average weight's drift, on any model and data set."""
    name: Literal["ewc"] = "ewc"
    strength: float = Field(100.0, gt=0.0)  # the paper's lambda
    fisher_examples: int = Field(200, ge=1)
    normalize: bool = True  # false: the raw Fisher, as in the paper


class LwfStrategy(StrictModel):
    """Learning without forgetting (Li & Hoiem 2016): the new stage's inputs are also run
    through every earlier head, and the model before the stage is the teacher of those
    outputs (softened KL, weight `alpha` per example)."""
    name: Literal["lwf"] = "lwf"
    alpha: float = Field(1.0, gt=0.0)
    temperature: float = Field(2.0, gt=0.0)


class AdapterPerStage(StrictModel):
    """A new adapter (and head) per stage over the one frozen base; earlier stages' adapters
    are frozen and each stage is scored with its own. `orthogonal` > 0 adds O-LoRA's penalty
    (Wang et al. 2023): orthogonal * sum ||A_new A_old^T||^2 over LoRA layers."""
    name: Literal["adapter-per-stage"] = "adapter-per-stage"
    orthogonal: float = Field(0.0, ge=0.0)


StrategyConfig = Annotated[Union[NaiveStrategy, ReplayStrategy, EwcStrategy, LwfStrategy,
                                 AdapterPerStage], Field(discriminator="name")]


class ContinualRun(StrictModel):
    model: ModelConfig = ModelConfig()
    method: MethodConfig = Field(default_factory=lambda: METHODS["lora"].config_cls())
    train: TrainConfig = TrainConfig()  # every stage's training (from the stage's data)
    stages: list[Stage] = Field(min_length=1)
    strategy: StrategyConfig = NaiveStrategy()
    # the first N stages are already trained (the weights model.init_adapter names, or the
    # model itself): they are scored and remembered (replay buffer, Fisher), not trained again
    trained_stages: int = Field(0, ge=0)
    output_dir: str = "runs/continual"

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """A stage without `task:` is classification; `method:` without a name is LoRA."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("stages"), list):
            data["stages"] = [{"task": "classification", **s} if isinstance(s, dict)
                              and "task" not in s else s for s in data["stages"]]
        if isinstance(data.get("method"), dict) and "name" not in data["method"]:
            data["method"] = {"name": "lora", **data["method"]}
        if isinstance(data.get("strategy"), str):
            data["strategy"] = {"name": data["strategy"]}
        return data

    @model_validator(mode="after")
    def _checks(self) -> "ContinualRun":
        refuse_quantize(self.model, "tunelab continual")
        names = [s.name for s in self.stages]
        for i, s in enumerate(self.stages):
            if not re.fullmatch(r"[A-Za-z0-9_-]+", s.name):
                raise ValueError(f"stages.{i}.name: stage names become directory names; use "
                                 "letters, digits, _ and - only")
            if names.index(s.name) != i:
                raise ValueError(f"stages.{i}.name: {s.name!r} is stage {names.index(s.name)}'s "
                                 "name too; give every stage its own name")
            if getattr(s.data, "packing", None) is not None:
                raise ValueError(f"stages.{i}.data.packing: continual batches are padded, "
                                 "never packed; remove it")
        tasks: dict[str, str] = {}
        for i, s in enumerate(self.stages):
            if tasks.setdefault(s.head_name, s.task) != s.task:
                raise ValueError(f"stages.{i}.head: head {s.head_name!r} is a "
                                 f"{tasks[s.head_name]} head; a {s.task} stage needs its own")
        if self.strategy.name == "adapter-per-stage":
            shared = [s.name for s in self.stages if s.head_name != s.name]
            if shared:
                raise ValueError(f"strategy: adapter-per-stage gives every stage its own adapter "
                                 f"and head; remove head from stage {shared[0]}")
            if not METHODS[self.method.name].saves_adapter or \
                    getattr(self.method, "init", None) == "pissa":
                raise ValueError(f"method.name: adapter-per-stage keeps the base frozen, and "
                                 f"{self.method.name} changes it; use an adapter method (lora)")
        if self.strategy.name == "adapter-per-stage" and self.strategy.orthogonal > 0 \
                and self.method.name != "lora":
            raise ValueError("strategy.orthogonal: O-LoRA's penalty compares LoRA A matrices; "
                             "set method.name: lora or strategy.orthogonal: 0")
        if self.trained_stages >= len(self.stages):
            raise ValueError(f"trained_stages: {self.trained_stages} of {len(self.stages)} "
                             "stages are already trained, so none is left to train; add a stage")
        if self.trained_stages and self.strategy.name == "adapter-per-stage":
            raise ValueError("trained_stages: adapter-per-stage starts every stage's adapter "
                             "fresh; set trained_stages: 0 or choose another strategy")
        if self.train.metric is not None:
            raise ValueError("train.metric: each stage is scored by its task's own metric "
                             "(accuracy; entity F1 for token classification); remove it")
        if self.train.distributed == "fsdp" or self.train.compile \
                or self.train.gradient_checkpointing:
            raise ValueError("train.distributed: fsdp, train.compile and "
                             "train.gradient_checkpointing are not supported by continual runs "
                             "yet; remove them")
        return self


_CONTINUAL = TypeAdapter(ContinualRun)


STRATEGY_NAMES = ("naive", "replay", "ewc", "lwf", "adapter-per-stage")


def validate_continual(tree: dict[str, Any], source: str = "config") -> ContinualRun:
    strategy = tree.get("strategy") if isinstance(tree, dict) else None
    name = strategy.get("name") if isinstance(strategy, dict) else strategy
    if name is not None and name not in STRATEGY_NAMES:
        close = difflib.get_close_matches(str(name), STRATEGY_NAMES, n=1)
        raise ConfigError(f"{source}: strategy.name: unknown strategy {name!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; choose from: {', '.join(STRATEGY_NAMES)}")
    try:
        return _CONTINUAL.validate_python(tree)
    except ValidationError as exc:
        lines = [describe(err, ContinualRun) for err in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(dict.fromkeys(lines))) from None


def load_continual_config(path: str | Path | None,
                          overrides: list[str] | None = None) -> ContinualRun:
    """Read YAML, apply `key=value` overrides, validate; one ConfigError naming every bad key."""
    tree = read_yaml(path) if path is not None else {}
    if isinstance(tree.get("strategy"), str):  # `strategy: ewc`, so strategy.x=... applies
        tree["strategy"] = {"name": tree["strategy"]}
    for note in apply_overrides(tree, overrides, str(path) if path else "config"):
        note_to_stderr(note)
    return validate_continual(tree, str(path) if path else "config")


def stage_config(cfg: ContinualRun, index: int, output_dir: str | Path) -> Any:
    """Stage `index` as the single-task run config its setup reads (and its sub-run saves)."""
    tree = cfg.model_dump(mode="json")
    stage = tree["stages"][index]
    sub = {"task": stage["task"], "data": stage["data"], "model": tree["model"],
           "method": tree["method"], "train": tree["train"], "output_dir": str(output_dir)}
    return validate(sub, source=f"stages.{index}")
