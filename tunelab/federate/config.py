"""The `tunelab federate` config: an ordinary run config plus a `federated:` block.

The run config says what one client trains (task, data, model, adapter method, optimizer);
the `federated:` block says how the training set is shared out, who trains each round, for
how long, and how the server combines the updates. Both are validated before any weights
load, and every bad key is reported in one ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from tunelab.config import RunConfig
from tunelab.config.load import note_to_stderr, validate
from tunelab.config.messages import describe
from tunelab.config.switch import apply_overrides
from tunelab.config.tree import read_yaml
from tunelab.errors import ConfigError
from tunelab.methods import METHODS
from tunelab.schema import StrictModel

KEY = "federated"


class SplitSettings(StrictModel):
    """How the training set becomes one shard per client."""

    kind: Literal["iid", "dirichlet", "files"] = "iid"
    alpha: float = Field(0.5, gt=0.0)  # dirichlet: smaller is more skewed label mixes
    seed: int = 0
    files: list[str] | None = None  # kind files: one training file per client, in client order

    @model_validator(mode="after")
    def _files_iff_kind(self) -> SplitSettings:
        if self.kind == "files" and not self.files:
            raise ValueError("files: kind files needs one training file per client")
        if self.kind != "files" and self.files:
            raise ValueError("files: only read when kind is files; remove it or set kind: files")
        return self


class ClientDP(StrictModel):
    """Client-level DP (Flower's fixed-clipping wrappers): each client's update is clipped to
    `clipping_norm`, the aggregate gets Gaussian noise of std noise_multiplier * clip / n."""

    clipping: Literal["client", "server"] = "client"  # who clips: the client before sending,
    #                                                  or the server on receipt
    clipping_norm: float = Field(gt=0.0)
    noise_multiplier: float = Field(ge=0.0)


class FederatedSettings(StrictModel):
    clients: int = Field(ge=1)
    split: SplitSettings = SplitSettings()
    clients_per_round: int | None = Field(None, ge=1)  # None: every client, every round
    rounds: int = Field(ge=1)
    local_steps: int | None = Field(None, ge=1)  # optimizer steps per client per round
    local_epochs: float | None = Field(None, gt=0.0)  # or passes over the client's shard
    strategy: Literal["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi"] = "fedavg"
    proximal_mu: float = Field(0.01, ge=0.0)  # fedprox: weight of ||w - w_global||^2 / 2
    server_lr: float | None = Field(None, gt=0.0)  # the server optimiser's step; None: 1.0
    #                                                for fedavgm, 0.01 for fedadam / fedyogi
    server_momentum: float = Field(0.0, ge=0.0, lt=1.0)  # fedavgm: momentum of server SGD
    server_betas: tuple[float, float] = (0.9, 0.99)
    server_tau: float = Field(1e-3, gt=0.0)  # fedadam / fedyogi: adaptivity (epsilon)
    logit_adjust: float = Field(0.0, ge=0.0)  # tau: each client trains on logits + tau x log
    #                                          of its own label prior (label-skewed splits)
    dp: ClientDP | None = None
    client_scores: bool = True  # each round, every client scores the global adapter on its
    #                             share of the dev set (split like the training set)
    timeout: float = Field(3600.0, gt=0.0)  # seconds the server waits for a round's replies

    @model_validator(mode="after")
    def _consistent(self) -> FederatedSettings:
        if self.local_steps is not None and self.local_epochs is not None:
            raise ValueError("local_steps: give local_steps or local_epochs, not both")
        if self.clients_per_round is not None and self.clients_per_round > self.clients:
            raise ValueError(f"clients_per_round: {self.clients_per_round} is more than the "
                             f"{self.clients} clients; lower it or add clients")
        if self.split.files is not None and len(self.split.files) != self.clients:
            raise ValueError(f"split.files: {len(self.split.files)} files for {self.clients} "
                             "clients; give exactly one file per client")
        return self

    @property
    def per_round(self) -> int:
        return self.clients_per_round or self.clients

    @property
    def server_step(self) -> float:
        """server_lr, or the strategy's default (FedAvgM: plain averaging; Adam / Yogi: the
        small step adaptive server optimisers need, Reddi et al. 2021)."""
        if self.server_lr is not None:
            return self.server_lr
        return 1.0 if self.strategy == "fedavgm" else 0.01


@dataclass(frozen=True)
class FederatedRun:
    """What each client trains (`run`) and how the federation trains it (`federated`)."""

    run: RunConfig
    federated: FederatedSettings

    def dump(self) -> dict[str, Any]:
        return {**self.run.model_dump(mode="json"), KEY: self.federated.model_dump(mode="json")}


_SETTINGS = TypeAdapter(FederatedSettings)


def load_federated_config(path: str | Path | None,
                          overrides: list[str] | None = None) -> FederatedRun:
    """Read YAML, apply `key=value` overrides (federated.* too), validate both parts; one
    ConfigError naming every bad key."""
    tree = read_yaml(path) if path is not None else {}
    source = str(path) if path else "config"
    for note in apply_overrides(tree, overrides, source):
        note_to_stderr(note)
    return validate_federated(tree, source)


def validate_federated(tree: dict[str, Any], source: str = "config") -> FederatedRun:
    tree = dict(tree)
    block = tree.pop(KEY, None)
    errors: list[str] = []
    settings = run = None
    if block is None:
        errors.append(f"{KEY}: missing; add a federated: block (clients, rounds, ...)")
    else:
        try:
            settings = _SETTINGS.validate_python(block)
        except ValidationError as exc:
            errors += [f"{KEY}." + describe(err, FederatedSettings) for err in exc.errors()]
    try:
        run = validate(tree, source)
    except ConfigError as exc:
        errors.append(str(exc).removeprefix(f"{source}: "))
    if run is not None:
        errors += _run_errors(run)
    if errors or settings is None or run is None:
        raise ConfigError(f"{source}: " + "; ".join(dict.fromkeys(errors)))
    return FederatedRun(run, settings)


def _run_errors(run: RunConfig) -> list[str]:
    """What a run config may hold alone but not under federation."""
    out = []
    if run.task != "classification":
        out.append(f"task: federated training supports classification (the split is over "
                   f"labels); {run.task} is not supported yet")
        return out
    if not METHODS[run.method.name].saves_adapter:
        out.append(f"method.name: only adapter tensors travel between clients and server; "
                   f"{run.method.name} trains the whole model (use lora, dora, ia3, ...)")
    if run.data.augment is not None:
        out.append("data.augment: not supported under federation; remove it")
    if getattr(run, "privacy", None) is not None:
        out.append("privacy: DP-SGD inside each client is not wired to federation; for "
                   "client-level DP use federated.dp")
    if getattr(run, "distill", None) is not None:
        out.append("distill: not supported under federation; remove it")
    return out
