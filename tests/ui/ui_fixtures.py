"""The UI under test: a live `tunelab ui` process (python -m tunelab ui) on a free
port, and cleanup that ends every process a test started (the UI, supervisors, training)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@contextmanager
def live_ui(runs_dir: Path, port: int, *extra: str) -> Iterator[str]:
    """A `tunelab ui` process answering at the returned URL until the block ends."""
    log = (runs_dir.parent / f"ui-{port}.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", "ui", "--runs-dir",
                             str(runs_dir), "--port", str(port), *extra], env=env(),
                            stdout=log, stderr=subprocess.STDOUT, cwd=runs_dir.parent)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/static/app.css", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"the ui did not start: {proc.poll()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def end_runs(runs_dir: Path) -> None:
    """Kill the training and supervisor processes the UI started for this test's runs."""
    for state in (runs_dir / ".ui").glob("*.json"):
        data = json.loads(state.read_text())
        for key in ("pid", "supervisor"):
            pid = data.get(key)
            if pid and Path(f"/proc/{pid}/cmdline").is_file() and \
                    str(runs_dir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def runs_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "runs"
    path.mkdir()
    yield path
    end_runs(path)


def form(model: Path, data: dict[str, Path], name: str, steps: int, **options: str) -> dict:
    """The new-run form for the tiny BERT on the toy sentiment set."""
    return {"name": name, "task": "classification", "model": str(model),
            "train": str(data["train"]), "dev": str(data["dev"]), "method": "lora",
            "method_options": "r=4\nalpha=8\ntargets=[query,value]",
            "options": {"max_steps": str(steps), "batch_size": "8", "lr": "5e-3",
                        "log_every": "2", **options},
            "overrides": "data.columns.text=sentence\nmodel.max_length=32"}
