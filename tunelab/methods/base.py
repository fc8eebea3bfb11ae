"""What every method shares: the Method interface, freezing, head detection, the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from tunelab.errors import AdapterError
from tunelab.methods.hooks import StepHook
from tunelab.models.heads import owned_parameters
from tunelab.schema import StrictModel

# Task heads a sequence-classification model may carry (transformers' attribute names).
# PEFT names the user's model `base_model.model` inside a PeftModel; adapter keys start so.
PEFT_PREFIX = "base_model.model."


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
    # code the training loop runs every step for this method (AdaLoRA's rank allocator)
    hook: StepHook | None = None

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


C = TypeVar("C", bound=StrictModel)  # a method's config section
L = TypeVar("L", bound="AdapterLayer")


class Method(Generic[C]):
    """A fine-tuning method: knows which parameters train and how it changes the model.

    `apply` edits the user's model in place (replacing layers, setting requires_grad) and
    returns the same model object; it never wraps it. Generic over its config, so each
    method's hooks take its own config type without overriding the signature.
    """

    name: ClassVar[str]
    config_cls: type[C]  # not ClassVar: a ClassVar cannot hold a type variable
    saves_adapter: ClassVar[bool] = False  # True: PEFT adapter layout; False: a full checkpoint

    @classmethod
    def apply(cls, model: nn.Module, cfg: C, head: list[str]) -> ApplyReport:
        raise NotImplementedError

    @classmethod
    def check_run(cls, run: Any) -> None:
        """Refuse run settings the method cannot work with (ValueError naming the key), checked
        with the rest of the config before anything loads."""


class AdapterLayer(nn.Module):
    """A layer a method put in place of one of the model's own (e.g. LoraLinear for nn.Linear)."""

    mergeable: ClassVar[bool] = True

    def merged(self) -> nn.Module:
        """The layer type it replaced, with the method folded into its weights."""
        raise NotImplementedError


class AdapterMethod(Method[C]):
    """A method that adds weights beside the frozen base and saves only those, as an adapter.

    The hooks below map it to a PEFT adapter directory (adapter_config.json keys and
    safetensors key names are peft's, so peft loads what we write and we load what it writes).
    """

    saves_adapter = True
    peft_type: ClassVar[str]  # adapter_config.json's peft_type
    config_file: ClassVar[str] = "adapter_config.json"
    head_prefix: ClassVar[str] = PEFT_PREFIX  # the saved head's key prefix (modules_to_save)

    @classmethod
    def reads(cls, config: dict[str, Any]) -> bool:
        """Whether an adapter config was written by this method."""
        return config.get("peft_type") == cls.peft_type

    @classmethod
    def adapter_config(cls, model: nn.Module, cfg: C, head: list[str]) -> dict[str, Any]:
        """The method's own adapter_config.json keys (the shared ones are written for it)."""
        raise NotImplementedError

    @classmethod
    def config_from_adapter(cls, config: dict[str, Any], source: str) -> C:
        """The tunelab method config that rebuilds the layers an adapter config describes."""
        raise NotImplementedError

    @classmethod
    def adapter_tensors(cls, model: nn.Module, head: list[str]) -> dict[str, torch.Tensor]:
        """PEFT-named tensors to save, the head's excluded: by default every trainable parameter."""
        return {PEFT_PREFIX + n: p for n, p in model.named_parameters()
                if p.requires_grad and n.split(".", 1)[0] not in head}

    @classmethod
    def take_extra_tensors(cls, model: nn.Module, state: dict[str, torch.Tensor],
                           source: str) -> dict[str, torch.Tensor]:
        """Load the saved tensors that are not model parameters (VeRA's shared projections)
        and return the rest, which load by name."""
        return state


def adapter_layers(model: nn.Module) -> dict[str, AdapterLayer]:
    return layers_of(model, AdapterLayer)


def layers_of(model: nn.Module, kind: type[L]) -> dict[str, L]:
    """The model's layers of one adapter layer type, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, kind)}


def refuse_unsupported(config: dict[str, Any], neutral: dict[str, Any], source: str) -> None:
    """Fail on adapter config keys we cannot honour; `neutral` holds the values meaning 'unused'."""
    for key, value in neutral.items():
        got = config.get(key, value)
        # `is` for the flags: 0 == False, and layers_to_transform=0 is a real setting
        if got is None or got is False or got is value or (type(got) is type(value) and got == value) \
                or got in ({}, [], "none"):
            continue
        raise AdapterError(f"{source}: {key}={got!r} is not supported by tunelab yet")


def required(config: dict[str, Any], key: str, source: str) -> Any:
    if key not in config:
        raise AdapterError(f"{source}: the adapter config has no '{key}'; is the file complete?")
    return config[key]


def freeze_all(model: nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze(model: nn.Module, names: list[str]) -> None:
    """Train the parameters the named modules own (the task head: a tied output layer stays
    with the embeddings it shares)."""
    for name in names:
        for _, p in owned_parameters(model, name):
            p.requires_grad_(True)


def unfreeze_all_in(model: nn.Module, names: list[str]) -> None:
    """Train every parameter inside the named modules, tied ones included (modules the user
    chose by name: asking for a tied `lm_head` trains the embeddings it shares)."""
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
