"""What every method shares: the Method interface, freezing, head detection, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from tunelab.schema import StrictModel

# Task heads a sequence-classification model may carry (transformers' attribute names).
HEAD_NAMES = ("classifier", "score")


@dataclass
class ApplyReport:
    """What a method did to the model: printed by `tunelab info` and at the start of a run."""

    method: str
    matched: list[str]
    head: list[str]
    trainable: int
    total: int
    notes: list[str] = field(default_factory=list)
    # parameter name -> multiplier on train.lr, for methods that train parts at other rates (LoRA+)
    lr_scales: dict[str, float] = field(default_factory=dict)

    def lines(self, max_names: int = 12) -> list[str]:
        shown = self.matched[:max_names]
        more = len(self.matched) - len(shown)
        pct = 100.0 * self.trainable / max(self.total, 1)
        out = [f"method: {self.method}",
               f"matched modules ({len(self.matched)}): " + (", ".join(shown) or "-")
               + (f", ... (+{more} more)" if more > 0 else ""),
               f"task head (trains fully): {', '.join(self.head) or '-'}",
               f"trainable parameters: {self.trainable:,} / {self.total:,} ({pct:.2f}%)"]
        return out + self.notes


class Method:
    """A fine-tuning method: knows which parameters train and how it changes the model.

    `apply` edits the user's model in place (replacing layers, setting requires_grad) and
    returns the same model object; it never wraps it.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[StrictModel]]
    saves_adapter: ClassVar[bool] = False  # True: PEFT adapter layout; False: a full checkpoint

    @classmethod
    def apply(cls, model: nn.Module, cfg: StrictModel, head: list[str]) -> ApplyReport:
        raise NotImplementedError


def head_modules(model: nn.Module) -> list[str]:
    """Names of the task head modules at the top of a transformers task model."""
    return [n for n in HEAD_NAMES if isinstance(getattr(model, n, None), nn.Module)]


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze(model: nn.Module, names: list[str]) -> None:
    for name in names:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)


def report(method: str, model: nn.Module, matched: list[str], head: list[str],
           notes: list[str] | None = None) -> ApplyReport:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return ApplyReport(method, matched, head, trainable, total, notes or [])


def name_matches(name: str, target: str) -> bool:
    """PEFT's rule for a target given by name: the whole module name or its dotted suffix."""
    return name == target or name.endswith("." + target)
