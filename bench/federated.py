"""Federated LoRA (Flower) against centralised training on the same data: dev accuracy per
round for an IID and a non-IID (Dirichlet alpha) split, and the bytes each round moves
(adapter + head only) next to what full-model federated averaging would move.

    python bench/federated.py [--data sst2] [--clients 10] [--per-round 3] [--rounds 20]
                              [--local-steps 20] [--alpha 0.5] [--max-train N]
                              [--strategy fedavg|fedavgm|fedprox|fedadam|fedyogi] [--mu 0.01]
                              [--server-lr LR] [--server-momentum 0.0] [--logit-adjust TAU]
                              [--jobs 1] [--threads N] [--no-write]

Every arm starts from the same seed-0 adapter and head with the same train.* settings (LoRA
r8 on every Linear of MiniLM, AdamW lr 1e-3, batch 32, linear schedule). Centralised: one run
of rounds x per-round x local-steps optimizer steps (the federation's total client steps),
scored on dev every per-round x local-steps steps, i.e. at each round's compute. Federated:
`tunelab federate` in one process (--strategy, FedAvg by default, clients_per_round of clients
sampled per round), the same strategy for the IID and the non-IID split.
Writes its section into BENCHMARKS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, update_benchmarks

from tunelab.config import validate
from tunelab.federate.config import FederatedSettings, validate_federated
from tunelab.federate.run import federate
from tunelab.recipes.run import train


def base_tree(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    return {"task": "classification",
            "model": {"name": args.model, "max_length": args.max_length},
            "data": {"train": args.data, **({"max_train_examples": args.max_train}
                                            if args.max_train else {}),
                     **({"max_eval_examples": args.max_eval} if args.max_eval else {})},
            "method": {"name": "lora", "r": 8, "alpha": 16, "targets": "all-linear"},
            "train": {"batch_size": args.batch_size, "lr": args.lr, "schedule": "linear",
                      "warmup_ratio": 0.06, "seed": 0, "checkpoint_every": 1_000_000,
                      "load_best_at_end": False, "log_every": 50},
            "output_dir": str(out)}


def centralised(args: argparse.Namespace, out: Path) -> tuple[list[float], float]:
    per_round = args.per_round * args.local_steps
    tree = base_tree(args, out)
    tree["train"].update(max_steps=args.rounds * per_round, eval_every=per_round)
    t0 = time.perf_counter()
    train(validate(tree), log=lambda _: None)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    dev = {r["step"]: r["accuracy"] for r in records if r.get("split") == "dev"}
    return [dev[r * per_round] for r in range(args.rounds + 1)], time.perf_counter() - t0


def federated(args: argparse.Namespace, out: Path, split: dict[str, Any]
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tree = base_tree(args, out)
    tree["federated"] = {"clients": args.clients, "clients_per_round": args.per_round,
                         "rounds": args.rounds, "local_steps": args.local_steps,
                         "split": split, "client_scores": False,
                         "strategy": args.strategy, "proximal_mu": args.mu,
                         "server_lr": args.server_lr,
                         "server_momentum": args.server_momentum,
                         "logit_adjust": args.logit_adjust}
    summary = federate(validate_federated(copy.deepcopy(tree)), log=lambda _: None)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records, summary


STRATEGY_NAMES = {"fedavg": "FedAvg", "fedavgm": "FedAvgM", "fedprox": "FedProx",
                  "fedadam": "FedAdam", "fedyogi": "FedYogi"}


def strategy_detail(args: argparse.Namespace) -> str:
    if args.strategy == "fedprox":
        return f" (mu {args.mu:g})"
    step = FederatedSettings(clients=1, rounds=1, strategy=args.strategy,
                             server_lr=args.server_lr).server_step
    if args.strategy == "fedavgm":
        return f" (server lr {step:g}, momentum {args.server_momentum:g})"
    return f" (server lr {step:g})" if args.strategy in ("fedadam", "fedyogi") else ""


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="sst2", help="catalog name: sst2 or ag_news")
    p.add_argument("--model", default="minilm")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--per-round", type=int, default=3)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-steps", type=int, default=20)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--strategy", default="fedavg",
                   choices=list(STRATEGY_NAMES))
    p.add_argument("--mu", type=float, default=0.01, help="fedprox's proximal weight")
    p.add_argument("--server-lr", type=float, default=None,
                   help="server step (default: 1.0 fedavgm, 0.01 fedadam / fedyogi)")
    p.add_argument("--server-momentum", type=float, default=0.0, help="fedavgm's momentum")
    p.add_argument("--logit-adjust", type=float, default=0.0,
                   help="federated.logit_adjust (tau) for both splits")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-train", type=int, default=None, help="first N training examples")
    p.add_argument("--max-eval", type=int, default=None, help="first N dev examples")
    p.add_argument("--jobs", type=int, default=1,
                   help="arms (centralised, IID, non-IID) run at once, each in its own process")
    p.add_argument("--threads", type=int, default=None, help="torch threads per arm")
    p.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md")
    args = p.parse_args()
    _threads(args.threads)  # machine() reports the parent's setting
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-fed-") as tmp, ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_threads,
            initargs=(args.threads,)) as pool:
        arms = [pool.submit(centralised, args, Path(tmp) / "central"),
                pool.submit(federated, args, Path(tmp) / "iid", {"kind": "iid", "seed": 0}),
                pool.submit(federated, args, Path(tmp) / "noniid",
                            {"kind": "dirichlet", "alpha": args.alpha, "seed": 0})]
        (central, central_s), (iid, iid_sum), (non, non_sum) = [a.result() for a in arms]
    minutes = (time.perf_counter() - t0) / 60
    rows = [(f"| round | centralised (same steps) | IID | non-IID (alpha {args.alpha}) "
             "| MB sent: adapter + head | MB: full-model FedAvg |"),
            "|---:|---:|---:|---:|---:|---:|"]
    for r in range(args.rounds + 1):
        rows.append(f"| {r} | {central[r]:.4f} | {iid[r]['accuracy']:.4f} | "
                    f"{non[r]['accuracy']:.4f} | {iid[r]['train_bytes'] / 1e6:.3f} | "
                    f"{iid[r]['full_model_train_bytes'] / 1e6:.1f} |")
    gap_iid, gap_non = 100 * (central[-1] - iid[-1]["accuracy"]), \
        100 * (central[-1] - non[-1]["accuracy"])
    table = "\n".join(rows)
    print(table)
    print(f"final gap to centralised: IID {gap_iid:+.2f} points, non-IID {gap_non:+.2f} points "
          f"({minutes:.1f} min)")
    if args.no_write:
        return
    cmd = " ".join(["python bench/federated.py", *sys.argv[1:]])
    update_benchmarks(
        f"## Federated\n\n`{cmd}` ({datetime.date.today()}, {minutes:.1f} min; {machine()}).\n\n"
        f"{args.data}, MiniLM + LoRA r8 on every Linear, max length {args.max_length}; "
        f"{args.clients} clients, {args.per_round} sampled per round, {args.rounds} rounds of "
        f"{args.local_steps} local AdamW steps (batch {args.batch_size}, lr {args.lr}), "
        f"{STRATEGY_NAMES[args.strategy]}{strategy_detail(args)}"
        + (f", clients train on logits + {args.logit_adjust:g} x log(their label prior) "
           "(federated.logit_adjust)" if args.logit_adjust else "")
        + " in one process (`tunelab "
        "federate`, Flower's strategy). Dev accuracy of the global "
        "adapter after each round; centralised: one run of the same total steps, scored at "
        "each round's share of them. Bytes: the arrays of the round's training messages, both "
        "ways (Flower's serialised records), against the whole model's parameters for the same "
        f"messages. Final gap to centralised: IID {gap_iid:+.2f} points, non-IID "
        f"{gap_non:+.2f} points (goals: within 1 and 3). Centralised {central_s / 60:.1f} min, "
        f"IID {iid_sum['wall_seconds'] / 60:.1f} min, non-IID "
        f"{non_sum['wall_seconds'] / 60:.1f} min.\n\n" + table + "\n")


if __name__ == "__main__":
    main()
