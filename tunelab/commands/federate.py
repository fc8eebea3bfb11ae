"""`tunelab federate CONFIG`: federated fine-tuning with Flower.

Without --superlink every client runs in this process (Flower's strategies drive the rounds);
with --superlink HOST:PORT the run is submitted to a SuperLink, whose SuperNodes (started
with `flower-supernode --node-config "partition-id=K"`) are the clients.
"""

from __future__ import annotations

from typing import Any

from tunelab.federate.config import load_federated_config


def federate(config: str, overrides: list[str] | None = None, overwrite: bool = False,
             superlink: str | None = None, insecure: bool = True) -> dict[str, Any] | None:
    """Run (or submit) the federation; the in-process run returns its summary."""
    fed = load_federated_config(config, overrides)
    if superlink is None:
        from tunelab.federate.run import federate as run_here

        return run_here(fed, overwrite=overwrite)
    from tunelab.federate.deploy import submit

    run_dir = submit(fed, superlink, overwrite=overwrite, insecure=insecure)
    print(f"run directory (on the SuperLink's machine): {run_dir}")
    return None
