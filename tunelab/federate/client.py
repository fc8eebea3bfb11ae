"""The Flower ClientApp: a train message runs one local round of tunelab training on this
client's shard; an evaluate message scores the global adapter on the client's dev share.

The same app serves both engines: in one process (run.py hands each node its partition id)
and as SuperNode processes (`--node-config "partition-id=K"`). A process builds its Worker
once per config and keeps it: the model and data load once, not every round.
"""

from __future__ import annotations

from collections.abc import Callable

import yaml
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod

from tunelab.errors import ConfigError
from tunelab.federate.config import validate_federated
from tunelab.federate.worker import Worker

CONFIG_KEY = "tunelab-config"  # run_config: the resolved config as YAML text (or, in one
#                                process, the name of a Worker already built)
PARTITION_KEY = "partition-id"  # node_config: which shard this client trains
CLIPPING_KEY = "clipping_norm"  # what Flower's client-side DP wrapper puts in the config

WORKERS: dict[str, Worker] = {}  # one per config in this process

app = ClientApp()


def worker_for(context: Context, log: Callable[[str], None] = print) -> Worker:
    """This process's Worker for the run's config, built on first use."""
    text = str(context.run_config.get(CONFIG_KEY, ""))
    if text not in WORKERS:
        tree = yaml.safe_load(text) if text else None
        if not isinstance(tree, dict):
            raise ConfigError(f"run config {CONFIG_KEY}: no tunelab config; submit the run "
                              "with `tunelab federate CONFIG --superlink HOST:PORT`")
        WORKERS[text] = Worker(validate_federated(tree, CONFIG_KEY), log)
    return WORKERS[text]


def partition(context: Context, worker: Worker) -> int:
    k = context.node_config.get(PARTITION_KEY)
    clients = worker.fed.federated.clients
    if not isinstance(k, int) or not 0 <= k < clients:
        raise ConfigError(f"node config {PARTITION_KEY}: {k!r} is not a client of this "
                          f"federation; start each SuperNode with --node-config "
                          f"\"{PARTITION_KEY}=K\", K from 0 to {clients - 1}")
    return k


def _train(msg: Message, context: Context) -> Message:
    worker = worker_for(context)
    k = partition(context, worker)
    config = msg.content["config"]
    worker.load(msg.content["arrays"].to_torch_state_dict())
    mu = float(config.get("proximal-mu", 0.0))
    out = worker.fit(k, int(config["server-round"]), mu)
    metrics = MetricRecord({"num-examples": out["examples"], "partition-id": k,
                            **{n: float(v) for n, v in out.items() if n != "examples"}})
    content = RecordDict({"arrays": ArrayRecord(worker.state()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One local round; clipped by Flower's fixedclipping_mod when the server asks for it."""
    if CLIPPING_KEY in msg.content["config"]:
        return fixedclipping_mod(msg, context, _train)
    return _train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The global adapter's scores on this client's share of the dev set."""
    worker = worker_for(context)
    k = partition(context, worker)
    worker.load(msg.content["arrays"].to_torch_state_dict())
    dev = worker.shards[k].dev
    scores = worker.score(dev)
    metrics = MetricRecord({"num-examples": len(dev), "partition-id": k, **scores})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
