"""Separate processes on one or many machines: Flower's deployment engine (SuperLink and
SuperNodes; no Ray).

`server_app` and `client.app` are the Flower App's components. `submit` writes a Flower App
directory whose pyproject carries the fully resolved tunelab config as run config (so no
machine needs the YAML file, only the data it names), then hands it to `flwr run`. The
ServerApp runs on the SuperLink's machine and writes the run directory there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w
import yaml
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from tunelab.errors import ConfigError, TunelabError
from tunelab.federate.client import CONFIG_KEY
from tunelab.federate.config import FederatedRun
from tunelab.federate.run import describe_split, write_run
from tunelab.federate.server import serve
from tunelab.recipes.run import prepare_output
from tunelab.train.loop import METRICS_FILE

OVERWRITE_KEY = "tunelab-overwrite"
APP_NAME = "tunelab-federate"

server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """The federation's server: build the model, run every round, write the run directory."""
    from tunelab.federate.client import worker_for

    t0 = time.perf_counter()
    worker = worker_for(context)
    describe_split(worker, print)
    run_dir = prepare_output(worker.fed.run, resume=False,
                             overwrite=bool(context.run_config.get(OVERWRITE_KEY, False)))
    result, records = serve(grid, worker, run_dir / METRICS_FILE, print)
    write_run(worker, result, records, run_dir, time.perf_counter() - t0, print)


def app_dir(fed: FederatedRun, out: Path, overwrite: bool) -> Path:
    """A Flower App whose components are this package's and whose run config is `fed`."""
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(fed.dump(), sort_keys=False)
    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": APP_NAME, "version": "1.0.0", "dependencies": []},
        "tool": {"flwr": {"app": {
            "publisher": "tunelab",
            "components": {"serverapp": "tunelab.federate.deploy:server_app",
                           "clientapp": "tunelab.federate.client:app"},
            "config": {CONFIG_KEY: text, OVERWRITE_KEY: overwrite}}}}}
    (out / "pyproject.toml").write_text(tomli_w.dumps(project), encoding="utf-8")
    (out / "README.md").write_text("tunelab federate: generated Flower App\n", encoding="utf-8")
    return out


def absolute_output(fed: FederatedRun) -> FederatedRun:
    """output_dir made absolute here, so the ServerApp writes where the submitter expects
    when both run on one machine (elsewhere, give an absolute path that exists there)."""
    run = fed.run.model_copy(update={"output_dir": str(Path(fed.run.output_dir).absolute())})
    return FederatedRun(run, fed.federated)


def submit(fed: FederatedRun, superlink: str, overwrite: bool = False,
           insecure: bool = True, log: Callable[[str], None] = print,
           timeout: float | None = None) -> Path:
    """Start the run on the SuperLink whose Control API is `superlink` (host:port, 9093 by
    default) and stream its logs until it ends; returns the run directory."""
    if ":" not in superlink:
        raise ConfigError(f"--superlink: {superlink!r} is not host:port (the SuperLink's "
                          "Control API, e.g. 127.0.0.1:9093)")
    fed = absolute_output(fed)
    with tempfile.TemporaryDirectory(prefix="tunelab-flwr-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        conn: dict[str, Any] = {"address": superlink, "insecure": insecure}
        (home / "config.toml").write_text(tomli_w.dumps(
            {"superlink": {"default": "tunelab", "tunelab": conn}}), encoding="utf-8")
        app = app_dir(fed, Path(tmp) / "app", overwrite)
        env = {**os.environ, "FLWR_HOME": str(home)}
        cmd = [_flwr(), "run", str(app), "tunelab", "--stream"]
        log(f"submitting to the SuperLink at {superlink}: {' '.join(cmd[1:3])} ...")
        done = subprocess.run(cmd, env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise TunelabError(f"--superlink {superlink}: flwr run exited with {done.returncode}; "
                           "is flower-superlink running there (--insecure), with SuperNodes "
                           "connected?")
    return Path(fed.run.output_dir)


def _flwr() -> str:
    """The flwr CLI beside this Python (a virtual environment's bin/), else on PATH."""
    here = Path(sys.executable).parent / "flwr"
    return str(here) if here.is_file() else "flwr"
