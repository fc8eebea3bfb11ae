"""Reptile and first-order MAML over the trainable parameters an adapter method leaves.

Only the adapter is meta-learned; the task head is not. Episodes give their classes a random
order, so the class index carries no meaning across episodes and the best head start for
every order at once is a symmetric one, which softmax cannot tell from zero. The head starts
every episode at zero (every class equally likely; the first inner step trains only it, the
next ones the adapter through it) and is saved as zero, which is how a later run that starts
from this adapter begins. What carries over is the adapter: features in which the classes of
a new task separate after a few steps.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from tunelab.data.batching import Encoded, collate
from tunelab.meta.config import MetaSettings
from tunelab.meta.episodes import Pool, sample_episode
from tunelab.tasks.classification import ClassificationTask


def mean_loss(model: nn.Module, data: Encoded, pad_id: int) -> torch.Tensor:
    batch = collate(data, list(range(len(data))), pad_id)
    return ClassificationTask.loss_sum(model, batch) / len(data)


def adapt(model: nn.Module, params: list[nn.Parameter], support: Encoded, steps: int, lr: float,
          pad_id: int) -> float:
    """The inner loop: `steps` AdamW steps on the support set; returns the first step's loss."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    first = None
    for _ in range(steps):
        loss = mean_loss(model, support, pad_id)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    return float(first)


def zero_(params: list[nn.Parameter]) -> None:
    with torch.no_grad():
        for p in params:
            p.zero_()


def meta_train(model: nn.Module, head: list[str], pools: list[Pool], s: MetaSettings,
               pad_id: int, log: Callable[[str], None] = print) -> list[dict]:
    """Meta-learn the non-head trainable parameters in place; one record per episode."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head_params = [p for n, p in named if n.split(".")[0] in head]
    meta_params = [p for n, p in named if n.split(".")[0] not in head]
    params = [p for _, p in named]
    outer = torch.optim.AdamW(meta_params, lr=s.outer, weight_decay=0.0) \
        if s.algorithm == "fomaml" else None
    model.train()
    history: list[dict] = []
    for ep in range(s.episodes):
        e = sample_episode(pools, s.n_way, s.k_shot, s.query_shot, s.seed, ep)
        start = [p.detach().clone() for p in meta_params]
        zero_(head_params)
        support_loss = adapt(model, params, e.support, s.inner_steps, s.inner_lr, pad_id)
        if outer is not None:  # FOMAML: the query gradient at the adapted weights, applied at the start
            model.zero_grad(set_to_none=True)
            query = mean_loss(model, e.query, pad_id)
            query.backward()
            grads = [p.grad.clone() for p in meta_params]
            with torch.no_grad():
                for p, p0, g in zip(meta_params, start, grads):
                    p.copy_(p0)
                    p.grad = g
            outer.step()
            outer.zero_grad(set_to_none=True)
        else:  # Reptile: move the start toward the adapted weights
            with torch.no_grad():
                query = mean_loss(model, e.query, pad_id)
                eps = s.outer * (1.0 - ep / s.episodes)
                for p, p0 in zip(meta_params, start):
                    p.copy_(p0 + eps * (p - p0))
        model.zero_grad(set_to_none=True)
        history.append({"episode": ep + 1, "source": e.source, "classes": e.classes,
                        "support_loss": support_loss, "query_loss": query.item()})
        if (ep + 1) % s.log_every == 0 or ep + 1 == s.episodes:
            window = history[-s.log_every:]
            log(f"episode {ep + 1}/{s.episodes}: support loss before adapting "
                f"{sum(h['support_loss'] for h in window) / len(window):.4f}, query loss after "
                f"{sum(h['query_loss'] for h in window) / len(window):.4f}")
    zero_(head_params)
    return history
