"""One process's share of a federation: the model, the task, the client shards, and a local
round of training run by tunelab's own Trainer.

The server and every client build the same Worker from the same config (the split is a pure
function of the config), so a client process knows its shard from its partition id alone.
Only the trainable tensors (the adapter and the head) are read out and loaded in; the base
weights stay where they were loaded.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tunelab.data import load_splits
from tunelab.data.batching import Encoded
from tunelab.data.splits import Splits, read_like_training, sort_labels
from tunelab.errors import DataError
from tunelab.federate.config import FederatedRun
from tunelab.federate.split import label_counts, split_indices, take
from tunelab.methods.hooks import StepHook
from tunelab.recipes.run import build_run, pick_device, seed_everything
from tunelab.train.batches import StepBatches
from tunelab.train.loop import Trainer
from tunelab.train.prepare import autocast_for


@dataclass
class Shard:
    train: Encoded
    dev: Encoded
    labels: dict[str, int]  # training examples per label


def subset(data: Encoded, index: list[int]) -> Encoded:
    return Encoded(take(data.input_ids, index),
                   take(data.token_type_ids, index) if data.token_type_ids is not None else None,
                   take(data.labels, index))


class ProxHook(StepHook):
    """FedProx: adds mu/2 * ||w - w_global||^2 over the trainable tensors to each step's loss,
    on top of whatever the adapter method's own hook does."""

    def __init__(self, inner: StepHook, params: list[torch.nn.Parameter], mu: float):
        self.inner, self.params, self.mu = inner, params, mu
        self.anchor = [p.detach().clone() for p in params]

    def start(self, total_steps: int) -> None:
        self.inner.start(total_steps)

    def extra_loss(self) -> torch.Tensor | None:
        prox = 0.5 * self.mu * sum(((p - a) ** 2).sum() for p, a in zip(self.params, self.anchor))
        own = self.inner.extra_loss()
        return prox if own is None else own + prox

    def after_step(self, step: int) -> dict[str, float]:
        return self.inner.after_step(step)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class PriorAdjusted:
    """A classification task whose training loss reads logits + tau * log(prior), the prior
    being this client's label frequencies (logit adjustment, Menon et al., ICLR 2021; for
    label-skewed federated clients, FedLC, Zhang et al., ICML 2022). A client that holds
    mostly one label then has little reason to move the shared weights toward predicting it,
    the drift that makes averaged rounds swing between classes. Scoring is untouched."""

    def __init__(self, task: Any, counts: dict[str, int], tau: float):
        n = torch.tensor([counts.get(label, 0) for label in task.index], dtype=torch.float32)
        prior = (n + 1) / (n.sum() + len(n))  # add-one: a label the client lacks stays finite
        self.task, self.offset = task, tau * prior.log()  # (n_labels,)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def loss_sum(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.task.logits(model, batch)  # (B, n_labels)
        return F.cross_entropy(logits + self.offset.to(logits.device), batch["labels"],
                               reduction="sum")


class Worker:
    """Model, task, data and shards for `fed`; `log` hears the build and each local round."""

    def __init__(self, fed: FederatedRun, log: Callable[[str], None] = print):
        self.fed, self.cfg, self.log = fed, fed.run, log
        self.device = pick_device(self.cfg.train.device)
        seed_everything(self.cfg.train.seed)
        splits, train_shards = _read(fed)
        self.setup, self.report = build_run(self.cfg, log, splits, self.device)
        self.setup.model.to(self.device)
        self.named = [(n, p) for n, p in self.setup.model.named_parameters() if p.requires_grad]
        s = fed.federated.split
        labels = [e.label for e in splits.dev]
        dev_shards = split_indices("iid" if s.kind == "files" else s.kind, labels,
                                   fed.federated.clients, s.alpha, s.seed + 1)
        train_labels = [e.label for e in splits.train]
        self.shards = [Shard(subset(self.setup.train, t), subset(self.setup.dev, d), c)
                       for t, d, c in zip(train_shards, dev_shards,
                                          label_counts(train_labels, train_shards))]
        self.metric = self.cfg.train.metric or self.setup.task.default_metric
        self.precision = autocast_for(self.cfg.train.precision, self.device)[1]

    # ------------------------------------------------------------------ tensors that travel
    def state(self) -> dict[str, torch.Tensor]:
        """The trainable tensors (adapter and head), by parameter name, on the CPU."""
        return {n: p.detach().cpu().clone() for n, p in self.named}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n, _ in self.named if n not in state]
        if missing:
            raise DataError(f"federated: the update lacks {len(missing)} trainable tensors "
                            f"(first {missing[0]}); server and clients must run the same config")
        with torch.no_grad():
            for n, p in self.named:
                p.copy_(state[n].to(p.device, p.dtype))

    def full_model_bytes(self) -> int:
        """What one copy of the whole model would weigh on the wire (full-model FedAvg)."""
        return sum(p.numel() * p.element_size() for p in self.setup.model.parameters())

    # ------------------------------------------------------------------ local work
    def local_steps(self, k: int) -> int:
        f = self.fed.federated
        if f.local_steps is not None:
            return f.local_steps
        per_epoch = StepBatches(self.setup.task, self.shards[k].train, self.cfg.train).per_epoch
        return max(1, math.ceil((f.local_epochs or 1.0) * per_epoch / self.cfg.train.grad_accum))

    def fit(self, k: int, server_round: int, mu: float = 0.0) -> dict[str, Any]:
        """Client k's round `server_round`: the steps [(r-1)S, rS) of a schedule of R*S steps
        over its shard, from the weights loaded now (the global adapter). The optimizer
        starts fresh each round (stateless clients); data order and learning rate continue."""
        shard, steps = self.shards[k], self.local_steps(k)
        start = (server_round - 1) * steps
        tcfg = self.cfg.train.model_copy(update={
            "max_steps": steps * self.fed.federated.rounds, "eval_at_start": False,
            "eval_every": None, "checkpoint_every": None, "early_stopping": None,
            "load_best_at_end": False})
        params = [p for _, p in self.named]
        hook = ProxHook(self.report.hook or StepHook(), params, mu) if mu > 0 \
            else self.report.hook
        tau = self.fed.federated.logit_adjust
        task = PriorAdjusted(self.setup.task, shard.labels, tau) if tau else self.setup.task
        with tempfile.TemporaryDirectory(prefix="tunelab-client-") as tmp:
            trainer = Trainer(self.setup.model, task, shard.train, shard.dev, tcfg,
                              Path(tmp), self.device, _quiet, lr_scales=self.report.lr_scales,
                              hook=hook)
            trainer.total_steps = start + steps
            _advance(trainer.scheduler, start)
            result = trainer.fit(start)
        losses = [r["train_loss"] for r in result.history if "train_loss" in r]
        local = {k2: v for k2, v in result.last_eval.items() if k2 not in ("step", "split")}
        return {"steps": steps, "examples": len(shard.train), "tokens": result.tokens,
                "loss": sum(losses) / len(losses) if losses else float("nan"),
                **{f"local_{m}": v for m, v in local.items() if isinstance(v, (int, float))}}

    def score(self, data: Encoded) -> dict[str, float]:
        """The loaded weights' scores on `data` (numbers only)."""
        out = self.setup.task.evaluate(self.setup.model, data, self.cfg.train.eval_batch_size,
                                       self.device, None)
        return {m: float(v) for m, v in out.items() if isinstance(v, (int, float))}


def _read(fed: FederatedRun) -> tuple[Splits, list[list[int]]]:
    """The splits the recipe encodes (kind files: the clients' files one after another, so
    each client's shard is a contiguous block) and each client's training indices."""
    cfg, s = fed.run, fed.federated.split
    if s.kind != "files":
        splits = load_splits(cfg.data)
        labels = [e.label for e in splits.train]
        return splits, split_indices(s.kind, labels, fed.federated.clients, s.alpha, s.seed)
    base = load_splits(cfg.data)  # dev (and test) as the config says; its train is unused
    train, shards = [], []
    for path in s.files or []:
        part = read_like_training(cfg.data, path, "train")
        if not part:
            raise DataError(f"federated.split.files: {path} holds no examples")
        shards.append(list(range(len(train), len(train) + len(part))))
        train += part
    labels = sort_labels({e.label for e in train} | set(base.labels))
    return Splits(train, base.dev, base.test, labels, base.notes), shards


def _advance(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> None:
    """Put a fresh schedule at step `steps`, as if it had run that far."""
    if steps:
        scheduler.last_epoch = steps - 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            scheduler.step()


def _quiet(_: str) -> None:
    pass
