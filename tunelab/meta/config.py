"""The `tunelab meta` config: a base model, an adapter method, source tasks and the episodes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from tunelab.config import DataConfig, MethodConfig, ModelConfig
from tunelab.config.load import note_to_stderr
from tunelab.config.messages import describe
from tunelab.config.quantize import refuse_quantize
from tunelab.config.switch import apply_overrides
from tunelab.config.tree import read_yaml
from tunelab.errors import ConfigError
from tunelab.methods import METHODS
from tunelab.schema import StrictModel


class MetaSettings(StrictModel):
    algorithm: Literal["reptile", "fomaml"] = "reptile"
    sources: list[DataConfig] = Field(min_length=1)  # classification sets; the target stays out
    n_way: int = Field(2, ge=2)  # classes per episode (the target task's label count)
    k_shot: int = Field(8, ge=1)  # support examples per class: what the inner loop trains on
    query_shot: int = Field(8, ge=1)  # query examples per class: FOMAML's meta-gradient, and
    #                                   the post-adaptation loss logged for both algorithms
    episodes: int = Field(200, ge=1)
    inner_steps: int = Field(5, ge=1)
    inner_lr: float = Field(1e-3, gt=0)  # AdamW, fresh each episode
    # Reptile: the step toward the adapted weights, decayed linearly to 0 (Nichol et al. use 1.0);
    # FOMAML: the outer AdamW learning rate on the first-order meta-gradient
    outer_lr: float | None = Field(None, gt=0)
    log_every: int = Field(20, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _no_packing(self) -> "MetaSettings":
        packed = [i for i, source in enumerate(self.sources) if source.packing is not None]
        if packed:
            raise ValueError(f"sources.{packed[0]}.packing: episodes are small padded batches, "
                             "never packed; remove it")
        return self

    @property
    def outer(self) -> float:
        return self.outer_lr if self.outer_lr is not None else (
            1.0 if self.algorithm == "reptile" else 1e-3)


class MetaRun(StrictModel):
    model: ModelConfig = ModelConfig()
    method: MethodConfig = Field(default_factory=lambda: METHODS["lora"].config_cls())
    meta: MetaSettings
    output_dir: str = "runs/meta"

    @model_validator(mode="after")
    def _adapter_method(self) -> "MetaRun":
        refuse_quantize(self.model, "tunelab meta")
        if not METHODS[self.method.name].saves_adapter:
            raise ValueError(f"method.name: meta-learning learns an adapter initialisation; "
                             f"{self.method.name} saves no adapter (use lora, dora, ia3, ...)")
        return self


_META = TypeAdapter(MetaRun)


def load_meta_config(path: str | Path | None, overrides: list[str] | None = None) -> MetaRun:
    """Read YAML, apply `key=value` overrides, validate; one ConfigError naming every bad key."""
    tree = read_yaml(path) if path is not None else {}
    for note in apply_overrides(tree, overrides, str(path) if path else "config"):
        note_to_stderr(note)
    if isinstance(tree.get("method"), dict) and "name" not in tree["method"]:
        tree["method"] = {"name": "lora", **tree["method"]}
    try:
        return _META.validate_python(tree)
    except ValidationError as exc:
        lines = [describe(err, MetaRun) for err in exc.errors()]
        raise ConfigError(f"{path or 'config'}: " + "; ".join(dict.fromkeys(lines))) from None
