"""Token attributions for one scalar output of a model: integrated gradients, gradient x
input (both through Captum, on the input embeddings), and attention rollout.

The scalar is a `Target`: the probability of a label, of an entity's tags, or of a next
token. Integrated gradients walk from a baseline input, the same sub-tokens with every
non-special one replaced by `baseline_id` (the tokenizer's [PAD] by default; [CLS]/[SEP]/BOS
kept so positions and segments stay as they are), to the real input in `steps` points
(Gauss-Legendre, Captum's default); by completeness the attributions then sum to
F(input) - F(baseline), and the difference is reported as `delta`. Gradient x input is one
backward pass. Attention rollout (Abnar & Zuidema 2020) multiplies the head-averaged
attention maps, each mixed half-and-half with the identity for the residual path, and reads
the target's rows: no gradient, no sign, the same for every label.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from tunelab.errors import ConfigError, ModelError
from tunelab.explain.encode import Encoded

Score = Callable[[torch.Tensor], torch.Tensor]  # model logits -> (B,)


@dataclass
class Target:
    name: str  # what is explained, as shown: "label 1", "PER 'John Smith'", "token ' the'"
    score: Score
    rows: list[int]  # positions whose output the score reads: rollout's query rows


@dataclass
class Attribution:
    tokens: list[float]  # (T,) one score per sub-token, summed over the hidden size
    delta: float | None = None  # IG: sum(attributions) - (F(input) - F(baseline))
    gap: float | None = None  # IG: F(input) - F(baseline)


def class_target(index: int, name: str) -> Target:
    """The probability of label `index` of a sequence classifier (logits (B, C))."""
    return Target(name, lambda logits: logits.softmax(-1)[:, index], [0])


def tags_target(positions: list[int], tags: list[int], name: str) -> Target:
    """The mean probability of `tags[i]` at `positions[i]` (token logits (B, T, C)): an
    entity's words' predicted tags, read at each word's first sub-token."""
    def score(logits: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(-1)  # (B, T, C)
        return torch.stack([probs[:, p, t] for p, t in zip(positions, tags)], -1).mean(-1)
    return Target(name, score, list(positions))


def next_token_target(position: int, token: int, name: str) -> Target:
    """The probability that position `position` of a causal LM predicts `token` next."""
    return Target(name, lambda logits: logits[:, position].softmax(-1)[:, token], [position])


def forward_fn(model: nn.Module, target: Target) -> Callable[..., torch.Tensor]:
    """f(input_ids, attention_mask[, token_type_ids]) -> (B,) target scores."""
    def f(ids: torch.Tensor, mask: torch.Tensor, *types: torch.Tensor) -> torch.Tensor:
        kwargs = {"token_type_ids": types[0]} if types else {}
        return target.score(model(input_ids=ids, attention_mask=mask, **kwargs).logits.float())
    return f


def _args(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    rest = (inputs["token_type_ids"],) if "token_type_ids" in inputs else ()
    return (inputs["attention_mask"], *rest)


def baseline_ids(enc: Encoded, baseline_id: int) -> torch.Tensor:
    """(1, T): the input with every non-special sub-token replaced by `baseline_id`."""
    return torch.tensor([[i if s is None else baseline_id
                          for i, s in zip(enc.input_ids, enc.spans)]])


def integrated_gradients(model: nn.Module, enc: Encoded, target: Target, steps: int,
                         baseline_id: int) -> Attribution:
    from captum.attr import LayerIntegratedGradients

    inputs = enc.tensors()
    lig = LayerIntegratedGradients(forward_fn(model, target), model.get_input_embeddings())
    attr, delta = lig.attribute(inputs["input_ids"], baselines=baseline_ids(enc, baseline_id),
                                additional_forward_args=_args(inputs), n_steps=steps,
                                internal_batch_size=steps, return_convergence_delta=True)
    f = forward_fn(model, target)
    with torch.no_grad():
        gap = float(f(inputs["input_ids"], *_args(inputs))
                    - f(baseline_ids(enc, baseline_id), *_args(inputs)))
    return Attribution(attr[0].sum(-1).tolist(), float(delta[0]), gap)  # (T, H) -> (T,)


def grad_x_input(model: nn.Module, enc: Encoded, target: Target, steps: int,
                 baseline_id: int) -> Attribution:
    from captum.attr import LayerGradientXActivation

    inputs = enc.tensors()
    gxa = LayerGradientXActivation(forward_fn(model, target), model.get_input_embeddings())
    attr = gxa.attribute(inputs["input_ids"], additional_forward_args=_args(inputs))
    return Attribution(attr[0].sum(-1).tolist())  # (T, H) -> (T,)


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """SDPA kernels return no attention maps; switch to the eager ones for the call."""
    before = getattr(model.config, "_attn_implementation", None)
    if before not in (None, "eager"):
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if before not in (None, "eager"):
            model.set_attn_implementation(before)


@torch.no_grad()
def attention_rollout(model: nn.Module, enc: Encoded, target: Target, steps: int,
                      baseline_id: int) -> Attribution:
    with eager_attention(model):
        out = model(**enc.tensors(), output_attentions=True)
    if not getattr(out, "attentions", None):
        raise ModelError(f"{type(model).__name__} returns no attention maps; attention rollout "
                         "needs a transformer (use --method ig or grad_x_input)")
    att = torch.stack(out.attentions)[:, 0].float().mean(1)  # (L, T, T), heads averaged
    eye = torch.eye(att.shape[-1])
    mixed = 0.5 * att + 0.5 * eye
    mixed = mixed / mixed.sum(-1, keepdim=True)
    roll = mixed[0]
    for layer in mixed[1:]:
        roll = layer @ roll  # (T, T): how much each output row draws on each input token
    return Attribution(roll[target.rows].mean(0).tolist())


METHODS: dict[str, Callable[[nn.Module, Encoded, Target, int, int], Attribution]] = {
    "ig": integrated_gradients, "grad_x_input": grad_x_input, "rollout": attention_rollout}


def attribute(model: nn.Module, enc: Encoded, target: Target, method: str = "ig",
              steps: int = 50, baseline_id: int = 0) -> Attribution:
    """Per-sub-token attributions of `target` on `enc` by `method` (a key of METHODS)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if steps < 2:
        raise ConfigError(f"--steps {steps}: integrated gradients need at least 2 steps")
    with torch.enable_grad():
        return METHODS[method](model, enc, target, steps, baseline_id)
