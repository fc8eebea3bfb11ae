"""The privacy: block of a run config (DP-SGD through Opacus).

Checks that need the rest of the run (method, packing, task) are `check_private_run`, called
by the run types' validator: each names the key at fault and what to set instead."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, model_validator

from tunelab.schema import StrictModel

# methods whose trainable tensors all get per-example gradients (tunelab.methods.grad_samplers
# for the adapter layers, Opacus' own samplers for Linear, Embedding and LayerNorm)
PRIVATE_METHODS = ("lora", "ia3", "bitfit", "full", "freeze")
PRIVATE_TASKS = ("classification", "token_classification", "causal_lm")


class PrivacyConfig(StrictModel):
    """Differentially private training (DP-SGD); None in a run config: not private.

    Give target_epsilon (the noise is calibrated to spend it by the last step), or
    noise_multiplier (epsilon is whatever the steps cost), or both: then the noise is as
    given and training stops before a step that would take epsilon past target_epsilon."""

    target_epsilon: float | None = Field(None, gt=0.0)
    noise_multiplier: float | None = Field(None, ge=0.0)  # sigma: noise std / max_grad_norm
    delta: float | None = Field(None, gt=0.0, lt=1.0)  # None: 1/(2N) rounded down to 10^-k
    max_grad_norm: float = Field(1.0, gt=0.0)  # C: each example's gradient is clipped to it
    accountant: Literal["rdp", "prv"] = "rdp"

    @model_validator(mode="after")
    def _epsilon_or_noise(self) -> "PrivacyConfig":
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise ValueError("give target_epsilon (e.g. 8: the noise is calibrated to it) or "
                             "noise_multiplier (e.g. 1.0: epsilon is what the steps cost)")
        return self

    def delta_for(self, n_examples: int) -> float:
        """delta, or 1/(2N) rounded down to a power of ten: well below 1/N, as it must be."""
        if self.delta is not None:
            return self.delta
        return 10.0 ** math.floor(math.log10(1.0 / (2 * max(n_examples, 1))))


def check_private_run(run: Any) -> None:
    """Refuse what DP-SGD cannot make private here (run: a run config with privacy set).
    Raises ValueError (the config loader reports it with the key named first)."""
    method = run.method
    if run.task == "multitask":
        raise ValueError("privacy: a multitask run cannot be trained privately yet (its "
                         "batches are drawn by task, not Poisson-sampled from one training "
                         "set); train one task per run, or remove privacy")
    if run.task not in PRIVATE_TASKS:
        raise ValueError(f"privacy: {run.task} runs cannot be trained privately yet "
                         f"(per-example gradients are checked for {', '.join(PRIVATE_TASKS)}); "
                         "remove privacy")
    if method.name not in PRIVATE_METHODS:
        raise ValueError(f"method.name: {method.name} has no per-example gradients for DP-SGD; "
                         f"use one of {', '.join(PRIVATE_METHODS)}, or remove privacy")
    if run.task == "causal_lm" and method.name == "full":
        raise ValueError("method.name: full trains a causal LM's output layer, which sees only "
                         "the trained tokens (not one row per example), so its gradients cannot "
                         "be split by example; use lora or ia3 with privacy")
    if getattr(method, "dropout", 0.0):
        raise ValueError("method.dropout: LoRA dropout draws a mask the per-example gradients "
                         "cannot see; set method.dropout: 0 with privacy")
    if getattr(run.data, "packing", None):
        raise ValueError("data.packing: packed rows mix examples, so a row's gradient is not "
                         "one example's; set data.packing: false with privacy")
    if getattr(run.data, "augment", None) is not None:
        raise ValueError("data.augment: augmented copies are more examples than the guarantee "
                         "counts; remove data.augment with privacy")
    if getattr(run, "distill", None) is not None:
        raise ValueError("distill: a teacher's outputs on the training data are not covered by "
                         "the guarantee; remove distill with privacy")
    train = run.train
    for key, on in (("gradient_checkpointing", train.gradient_checkpointing),
                    ("compile", train.compile), ("loss_chunk_size", train.loss_chunk_size)):
        if on:
            raise ValueError(f"train.{key}: per-example gradient hooks need each layer run "
                             f"once, as a module; remove train.{key} with privacy")
