"""`tunelab federate CONFIG`: every client in this process, Flower's strategy driving rounds.

Flower's simulation engine needs Ray, which this package does not require; on one machine
the clients run here instead, one after another, sharing one loaded model (each local round
starts by loading the global adapter). The messages are Flower's own, sent through a Grid
that calls the ClientApp directly, so the same strategy, ClientApp and round log run
unchanged under the deployment engine (deploy.py). The run directory it writes is an
ordinary tunelab run: `eval`, `predict`, `serve` and `merge` read it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from flwr.app import Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result
from flwr.supercore.task_identity import TaskIdentity

from tunelab.errors import TunelabError
from tunelab.federate.client import CONFIG_KEY, PARTITION_KEY, WORKERS, app
from tunelab.federate.config import FederatedRun
from tunelab.federate.server import serve
from tunelab.federate.worker import Worker
from tunelab.io import write_text
from tunelab.methods.peft_format import save_adapter
from tunelab.recipes.run import prepare_output, write_run_files
from tunelab.runs.layout import ADAPTER_DIR, check_replaceable, write_json
from tunelab.train.loop import METRICS_FILE

FEDERATED_FILE = "federated.yaml"
_NODE0 = 100  # in-process node ids: client k is node 100 + k  # the federated: block of the run, beside config.yaml


class InProcessGrid(Grid):
    """A Grid whose nodes are contexts in this process: pushing a message runs the
    ClientApp on it at once; pulling returns the replies."""

    def __init__(self, contexts: dict[int, Context]):
        self.contexts = contexts
        self.replies: dict[str, Message] = {}
        self._run: Any = None

    def set_run(self, run: Any) -> None:
        self._run = run

    @property
    def run(self) -> Any:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            msg.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            node = msg.metadata.dst_node_id
            self.replies[msg.metadata.message_id] = app(msg, self.contexts[node])
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in message_ids if i in self.replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(list(self.push_messages(messages))))


def local_grid(worker: Worker) -> InProcessGrid:
    """One node per client, each knowing its partition id; all share `worker`. Flower's
    messages take their run and sender from the process's task identity: set it as the
    ServerApp runtime would."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, SUPERLINK_NODE_ID
    token = f"in-process:{uuid.uuid4()}"
    WORKERS[token] = worker
    clients = worker.fed.federated.clients
    return InProcessGrid({_NODE0 + k: Context(run_id=1, node_id=_NODE0 + k,
                                         node_config={PARTITION_KEY: k, "num-partitions": clients},
                                         state=RecordDict(), run_config={CONFIG_KEY: token})
                          for k in range(clients)})


def federate(fed: FederatedRun, overwrite: bool = False,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the federation in this process; write and return the run's summary."""
    t0 = time.perf_counter()
    check_replaceable(Path(fed.run.output_dir), overwrite, "run")  # before any weights load
    worker = Worker(fed, log)
    describe_split(worker, log)
    run_dir = prepare_output(fed.run, resume=False, overwrite=overwrite)
    grid = local_grid(worker)
    try:
        result, records = serve(grid, worker, run_dir / METRICS_FILE, log)
    finally:
        WORKERS.pop(str(grid.contexts[_NODE0].run_config[CONFIG_KEY]), None)
    return write_run(worker, result, records, run_dir, time.perf_counter() - t0, log)


def describe_split(worker: Worker, log: Callable[[str], None]) -> None:
    f = worker.fed.federated
    log(f"federated: {f.clients} clients ({f.split.kind} split), {f.per_round} per round, "
        f"{f.rounds} rounds, {f.strategy}" + (f", client-level DP ({f.dp.clipping}-side "
                                              "clipping)" if f.dp else ""))
    for k, shard in enumerate(worker.shards):
        mix = ", ".join(f"{label} {n}" for label, n in shard.labels.items())
        log(f"client {k}: {len(shard.train)} train ({mix}), {len(shard.dev)} dev, "
            f"{worker.local_steps(k)} local steps")


def write_run(worker: Worker, result: Result, records: list[dict[str, Any]], run_dir: Path,
              seconds: float, log: Callable[[str], None]) -> dict[str, Any]:
    """The final global adapter as an ordinary tunelab run directory."""
    fed, s = worker.fed, worker.setup
    if len(result.arrays) == 0:
        raise TunelabError(f"federated: no round produced a global adapter (every client "
                           f"failed; see the client logs); nothing was saved in {run_dir}")
    worker.load(result.arrays.to_torch_state_dict())
    write_run_files(fed.run, s, run_dir, 1, True)
    write_text(run_dir / FEDERATED_FILE,
               yaml.safe_dump({"federated": fed.federated.model_dump(mode="json")},
                              sort_keys=False))
    adapter = save_adapter(s.model, fed.run.method, worker.report.head, str(s.model_path),
                           run_dir / ADAPTER_DIR, task=s.info.get("route", fed.run.task))
    metric = worker.metric
    final = {k: v for k, v in records[-1].items() if k not in _ROUND_KEYS}
    clients = [c for r in records for c in r["clients"] if "train_steps" in c]
    tokens = sum(c.get("train_tokens", 0) for c in clients)
    train_seconds = records[-1]["seconds"]
    summary = {"task": fed.run.task, "metric": metric, "federated": True,
               "strategy": fed.federated.strategy, "rounds": len(records) - 1,
               # as a train run's summary has them (tunelab report reads these); a step of
               # the federation is a round, as in metrics.jsonl
               "steps": len(records) - 1, "total_steps": fed.federated.rounds,
               "client_steps": int(sum(c["train_steps"] for c in clients)),
               "best": None, "restored_best": False, "stopped_early": False,
               "train_seconds": train_seconds, "tokens_per_s": tokens / max(train_seconds, 1e-9),
               "precision": worker.precision,
               "clients": fed.federated.clients, "clients_per_round": fed.federated.per_round,
               "initial_dev": {k: v for k, v in records[0].items() if k not in _ROUND_KEYS},
               "final_dev": final, "dev_examples": len(s.dev),
               "bytes_total": sum(r["bytes"] for r in records),
               "train_bytes_total": sum(r["train_bytes"] for r in records),
               "full_model_train_bytes_total": sum(r["full_model_train_bytes"] for r in records),
               "trainable": worker.report.trainable, "total": worker.report.total,
               "artifact_kind": "adapter", "artifact": str(adapter),
               "metrics_file": str(run_dir / METRICS_FILE), "wall_seconds": seconds,
               **({"dp": {**fed.federated.dp.model_dump(), "noise_std":
                          records[-1].get("noise_std")}} if fed.federated.dp else {})}
    write_json(run_dir / "summary.json", summary)
    log(f"final global dev {metric}: {final.get(metric, float('nan')):.4f} after "
        f"{summary['rounds']} rounds; adapter: {adapter}")
    return summary


_ROUND_KEYS = {"step", "split", "round", "bytes", "clients_trained", "train_bytes",
               "full_model_train_bytes", "noise_std", "seconds", "clients"}
