"""The server side: a Flower strategy from the config, and a record of every round.

`serve` runs Flower's own round loop (Strategy.start) over any Grid: the in-process one of
run.py or the SuperLink's. A thin Grid wrapper sees every message go out and every reply
come back, so each round's record holds the bytes sent to and from each client, each
client's scores, and the global adapter's dev score (Flower's evaluate_fn, on the server).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Result,
    Strategy,
)

from tunelab.federate.config import FederatedSettings
from tunelab.federate.worker import Worker


def build_strategy(f: FederatedSettings) -> Strategy:
    """FedAvg / FedAvgM / FedProx / FedAdam / FedYogi sampling clients_per_round of `clients` nodes,
    wrapped in Flower's fixed-clipping DP strategy when federated.dp is set."""
    frac = f.per_round / f.clients
    common: dict[str, Any] = {"fraction_train": frac, "min_train_nodes": f.per_round,
                              "min_available_nodes": f.clients,
                              "fraction_evaluate": 1.0 if f.client_scores else 0.0,
                              "min_evaluate_nodes": f.clients if f.client_scores else 0}
    strategy: Strategy
    if f.strategy == "fedprox":
        strategy = FedProx(proximal_mu=f.proximal_mu, **common)
    elif f.strategy in ("fedadam", "fedyogi"):
        cls = FedAdam if f.strategy == "fedadam" else FedYogi
        strategy = cls(eta=f.server_step, beta_1=f.server_betas[0], beta_2=f.server_betas[1],
                       tau=f.server_tau, **common)
    elif f.strategy == "fedavgm":
        strategy = FedAvgM(server_learning_rate=f.server_step,
                           server_momentum=f.server_momentum, **common)
    else:
        strategy = FedAvg(**common)
    if f.dp is None:
        return strategy
    wrap = DifferentialPrivacyClientSideFixedClipping if f.dp.clipping == "client" \
        else DifferentialPrivacyServerSideFixedClipping
    return wrap(strategy, f.dp.noise_multiplier, f.dp.clipping_norm, f.per_round)


def noise_std(f: FederatedSettings) -> float:
    """The std of the Gaussian noise Flower's DP wrappers add to each aggregate."""
    assert f.dp is not None
    return f.dp.noise_multiplier * f.dp.clipping_norm / f.per_round


class RoundLog(Grid):
    """Passes every call to `inner`, noting per node the bytes of the arrays each way and
    the metrics each reply carries."""

    def __init__(self, inner: Grid):
        self.inner = inner
        self.clients: dict[int, dict[str, Any]] = {}

    def take(self) -> list[dict[str, Any]]:
        """This round's per-client records (by partition id), and start the next round."""
        out = sorted(self.clients.values(), key=lambda c: c.get("client", -1))
        self.clients = {}
        return out

    def _note(self, node: int) -> dict[str, Any]:
        return self.clients.setdefault(node, {"bytes_to_client": 0, "bytes_from_client": 0})

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        for m in messages:
            c, n = self._note(m.metadata.dst_node_id), _array_bytes(m)
            c["bytes_to_client"] += n
            if m.metadata.message_type.startswith("train"):
                c["train_bytes"] = c.get("train_bytes", 0) + n
        replies = list(self.inner.send_and_receive(messages, timeout=timeout))
        for r in replies:
            c = self._note(r.metadata.src_node_id)
            if r.has_error():
                c["error"] = str(r.error.reason)
                continue
            n = _array_bytes(r)
            c["bytes_from_client"] += n
            kind = "train" if r.metadata.message_type.startswith("train") else "dev"
            if kind == "train":
                c["train_bytes"] = c.get("train_bytes", 0) + n
            for record in r.content.metric_records.values():
                for key, value in record.items():
                    if key == "partition-id":
                        c["client"] = int(value)
                    elif key != "num-examples" or kind == "train":
                        c[f"{kind}_{key}"] = value
        return replies

    # the rest of the Grid interface: straight through
    def set_run(self, run: Any) -> None:
        self.inner.set_run(run)

    @property
    def run(self) -> Any:
        return self.inner.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        return self.inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.inner.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.inner.pull_messages(message_ids)


def _array_bytes(m: Message) -> int:
    return sum(a.count_bytes() for a in m.content.array_records.values()) if m.has_content() \
        else 0


def serve(grid: Grid, worker: Worker, metrics_path: Path,
          log: Callable[[str], None] = print) -> tuple[Result, list[dict[str, Any]]]:
    """Run every round of the config's strategy; one record per round (and round 0, the
    starting adapter) in `metrics_path`, also returned."""
    f = worker.fed.federated
    strategy = build_strategy(f)
    logged = RoundLog(grid)
    records: list[dict[str, Any]] = []
    full = worker.full_model_bytes()
    t0 = time.perf_counter()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        worker.load(arrays.to_torch_state_dict())
        scores = worker.score(worker.setup.dev)
        clients = logged.take()
        sent = sum(c["bytes_to_client"] + c["bytes_from_client"] for c in clients)
        trained = sum(1 for c in clients if "train_steps" in c)
        record = {"step": server_round, "split": "dev", "round": server_round, **scores,
                  "bytes": sent, "clients_trained": trained,
                  "train_bytes": sum(c.get("train_bytes", 0) for c in clients),
                  # what full-model FedAvg would move for the same training messages
                  "full_model_train_bytes": 2 * trained * full,
                  **({"noise_std": noise_std(f)} if f.dp is not None and server_round else {}),
                  "seconds": time.perf_counter() - t0, "clients": clients}
        records.append(record)
        with open(metrics_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        log(_line(record, worker.metric))
        return MetricRecord(scores)

    result = strategy.start(logged, ArrayRecord(worker.state()), num_rounds=f.rounds,
                            timeout=f.timeout, evaluate_fn=evaluate)
    return result, records


def _line(r: dict[str, Any], metric: str) -> str:
    per = ", ".join(f"{c['client']}: {c[f'dev_{metric}']:.3f}" for c in r["clients"]
                    if f"dev_{metric}" in c and "client" in c)
    return (f"round {r['round']}: global dev {metric} {r[metric]:.4f}, {r['clients_trained']} "
            f"clients trained, {r['bytes'] / 1e6:.3f} MB sent"
            + (f"; per client {per}" if per else ""))
