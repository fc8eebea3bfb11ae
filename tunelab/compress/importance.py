"""Measured importance of heads, FFN neurons and layers, on examples of a run's training data
with its task's loss.

Heads (Michel et al. 2019, "Are Sixteen Heads Really Better than One?"): a gate xi_h = 1
multiplies head h's output where the heads enter the attention output projection; the score
is E_x |dL(x)/dxi_h|. Each example gets its own gates (a (B, heads) tensor), so the absolute
value is taken per example, as in the paper, not per batch. Scores are then normalised per
layer by their L2 norm, as the paper does.

FFN neurons: the same gate on each neuron of the activation entering the down projection;
dL/dxi_j = sum_t a_jt * dL/da_jt, the first-order Taylor estimate of the loss change when
neuron j is removed. Normalised per layer like heads.

Layers: the increase of the mean loss on the same examples when the layer is skipped (its
output replaced by its input). A direct measurement of what dropping it costs, rather than a
sum of head scores, which ignores the FFN half of the block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from tunelab.models.prune import attention_output, ffn_output
from tunelab.models.surgery import block_list


@dataclass
class Scores:
    examples: int
    base_loss: float                    # mean task loss per example, nothing removed
    heads: list[list[float]] | None = None   # [layer][query head], L2-normalised per layer
    ffn: list[list[float]] | None = None     # [layer][neuron], L2-normalised per layer
    layers: list[float] | None = None        # mean loss increase when the layer is skipped
    notes: list[str] = field(default_factory=list)


def sample(n_data: int, examples: int, seed: int = 0) -> list[int]:
    """`examples` indices of the data (all if fewer), a seeded draw so reruns score alike."""
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n_data, generator=g)[:examples].tolist())


def batches(index: list[int], lengths: list[int], batch_size: int) -> list[list[int]]:
    """Length-sorted batches (little padding)."""
    order = sorted(index, key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@contextmanager
def gated(model: nn.Module, heads: int | None, ffn: bool) -> Iterator[dict[str, list[Any]]]:
    """Per-example gates of ones in front of each layer's attention output projection
    (reshaped per head) and/or FFN down projection; the gates of the last forward are
    collected in the yielded dict {"heads": [...], "ffn": [...]} (one tensor per layer)."""
    gates: dict[str, list[Any]] = {"heads": [], "ffn": []}
    handles = []

    def hook(kind: str, n_heads: int | None) -> Callable[..., tuple[torch.Tensor, ...]]:
        def gate(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
            x = args[0]  # (B, T, heads * d) or (B, T, I)
            units = n_heads or x.shape[-1]
            g = torch.ones(x.shape[0], units, dtype=x.dtype, device=x.device, requires_grad=True)
            gates[kind].append(g)
            if n_heads:  # (B, T, heads, d) * (B, 1, heads, 1)
                shaped = x.unflatten(-1, (n_heads, -1)) * g[:, None, :, None]
                return (shaped.flatten(-2), *args[1:])
            return (x * g[:, None, :], *args[1:])  # (B, T, I) * (B, 1, I)
        return gate

    for block in block_list(model):
        if heads:
            handles.append(attention_output(block).register_forward_pre_hook(hook("heads", heads)))
        if ffn:
            handles.append(ffn_output(block).register_forward_pre_hook(hook("ffn", None)))
    try:
        yield gates
    finally:
        for h in handles:
            h.remove()


@contextmanager
def skipped(block: nn.Module) -> Iterator[None]:
    """Within the block, `block` passes its input hidden states through unchanged."""
    def skip(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _out: Any) -> Any:
        return args[0] if args else kwargs["hidden_states"]

    handle = block.register_forward_hook(skip, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _normalised(total: list[torch.Tensor], n: int) -> list[list[float]]:
    """Mean over examples, then each layer divided by its L2 norm (Michel et al.)."""
    out = []
    for layer in total:
        mean = layer / max(n, 1)
        out.append((mean / mean.norm().clamp_min(1e-20)).tolist())
    return out


def score(model: nn.Module, task: Any, data: Any, examples: int, batch_size: int,
          heads: int | None, ffn: bool, layers: bool) -> Scores:
    """Scores of what is asked: `heads` (the query-head count, or None), `ffn`, `layers`.
    The model is put in eval mode (no dropout) and its weights are not changed."""
    model.eval()
    index = sample(len(data), examples)
    plan = batches(index, data.lengths(), batch_size)
    n_blocks = len(block_list(model))
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)  # only the gates need gradients
    bar = tqdm(total=len(plan) * (1 + (n_blocks if layers else 0)), desc="importance",
               unit="batch", dynamic_ncols=True, mininterval=1.0)
    try:
        base, head_sum, ffn_sum = _gradients(model, task, data, plan, heads, ffn, bar)
        result = Scores(len(index), base / len(index))
        result.heads = _normalised(head_sum, len(index)) if heads else None
        result.ffn = _normalised(ffn_sum, len(index)) if ffn else None
        if layers:
            result.layers = [_loss(model, task, data, plan, block, bar) / len(index) - result.base_loss
                             for block in block_list(model)]
    finally:
        bar.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
    return result


def _gradients(model: nn.Module, task: Any, data: Any, plan: list[list[int]], heads: int | None,
               ffn: bool, bar: Any) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """(summed loss, per-layer sums of |dL/d gate| over examples for heads and neurons)."""
    device = next(model.parameters()).device
    head_sum: list[torch.Tensor] = []
    ffn_sum: list[torch.Tensor] = []
    total = 0.0
    for batch_index in plan:
        batch = {k: v.to(device) for k, v in task.collate(data, batch_index).items()}
        with gated(model, heads, ffn) as gates, torch.enable_grad():
            loss = task.loss_sum(model, batch)  # summed over examples: each has its own gates
            total += loss.item()
            wanted = gates["heads"] + gates["ffn"]
            if wanted:
                grads = torch.autograd.grad(loss, wanted, allow_unused=True)
                n_heads = len(gates["heads"])
                for sums, gs, ws in ((head_sum, grads[:n_heads], wanted[:n_heads]),
                                     (ffn_sum, grads[n_heads:], wanted[n_heads:])):
                    for i, (g, w) in enumerate(zip(gs, ws)):
                        per_unit = (torch.zeros_like(w) if g is None else g).abs().sum(0)
                        if len(sums) <= i:
                            sums.append(torch.zeros(per_unit.shape, dtype=torch.float64))
                        sums[i] += per_unit.double().cpu()  # (units,): sum over examples
        bar.update(1)
    return total, head_sum, ffn_sum


@torch.no_grad()
def _loss(model: nn.Module, task: Any, data: Any, plan: list[list[int]], block: nn.Module,
          bar: Any) -> float:
    """The summed loss with `block` skipped."""
    device = next(model.parameters()).device
    total = 0.0
    with skipped(block):
        for batch_index in plan:
            batch = {k: v.to(device) for k, v in task.collate(data, batch_index).items()}
            total += task.loss_sum(model, batch).item()
            bar.update(1)
    return total
