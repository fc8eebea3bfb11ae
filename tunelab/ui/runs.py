"""The runs directory as the UI sees it: list runs with their status and progress, start,
stop and resume them as `tunelab train` processes.

Training never runs inside the UI process: each run is the CLI, under a small supervisor
(supervise.py) in its own session, with its config, log and pid in RUNS/.ui/NAME.*. The
run directory itself stays exactly what `tunelab train` writes, and a restarted UI finds
running runs again from those files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import ConfigError, TunelabError

UI_DIR = ".ui"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
PLAN = re.compile(r"training (\d+) steps")


class RunError(TunelabError):
    """A run cannot be started, stopped or resumed in the state it is in."""


def check_name(name: str) -> str:
    """A run name is one plain directory name: nothing that could leave the runs dir."""
    if not NAME.match(name or "") or name in (".", ".."):
        raise ConfigError(f"run name {name!r}: use letters, digits, '.', '_' and '-' (up to 80, "
                          "not starting with '.' or '-')")
    return name


def _alive(pid: int | None) -> bool:
    """A live tunelab process with this pid (not a later process that reused the number)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].split()[0]
    except (OSError, IndexError):
        return False
    return b"tunelab" in cmd and status != "Z"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_metrics(run_dir: Path, since: int = 0) -> list[dict[str, Any]]:
    """Records of metrics.jsonl from line `since` on; a line still being written is left
    for the next read."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").split("\n")
    except OSError:
        return []
    out = []
    for line in lines[since:-1]:  # the part after the last newline is incomplete
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({})
    return out


class Runs:
    def __init__(self, root: Path, python: str = sys.executable):
        self.root, self.python = Path(root), python
        self.state_dir = self.root / UI_DIR

    def dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def _state(self, name: str) -> dict[str, Any]:
        return _read_json(self.state_dir / f"{name}.json") or {}

    def names(self) -> list[str]:
        """Run directories (and runs started here that have not written theirs yet)."""
        found = {p.name for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name)
                 and ((p / "run.json").is_file() or (p / "config.yaml").is_file())} \
            if self.root.is_dir() else set()
        if self.state_dir.is_dir():
            found |= {p.stem for p in self.state_dir.glob("*.json") if NAME.match(p.stem)}
        return sorted(found)

    def status(self, name: str) -> str:
        """running, finished, interrupted (stopped with a checkpoint: resumable) or failed."""
        run_dir, state = self.dir(name), self._state(name)
        if _alive(state.get("pid")) or _alive(state.get("supervisor")) and \
                state.get("exit_code", None) is None:
            return "running"
        if (run_dir / "summary.json").is_file():
            return "finished"
        code = state.get("exit_code")
        has_ckpt = any((run_dir / "checkpoints").glob("step-*"))
        if code == 130 or (code is None and has_ckpt):
            return "interrupted"
        return "failed"

    def describe(self, name: str) -> dict[str, Any]:
        """One row of the runs list: status, progress, ETA, task and the final score."""
        run_dir, state = self.dir(name), self._state(name)
        status = self.status(name)
        records = read_metrics(run_dir)
        train = [r for r in records if "train_loss" in r]
        step = max((r.get("step", 0) for r in records), default=0)
        summary = _read_json(run_dir / "summary.json") or {}
        total = summary.get("total_steps") or self._planned(name, run_dir)
        eta = None
        if status == "running" and total and state.get("started"):
            done = step - state.get("start_step", 0)
            spent = time.time() - state["started"]
            eta = spent / done * (total - step) if done > 0 else None
        info = _read_json(run_dir / "run.json") or {}
        return {"name": name, "status": status, "step": step, "total_steps": total,
                "eta_s": eta, "task": info.get("task"), "method": info.get("method"),
                "model": info.get("model_name"), "metric": summary.get("metric"),
                "final": summary.get("final_dev"), "last_loss": train[-1]["train_loss"]
                if train else None, "error": self._error(name) if status == "failed" else None}

    def _planned(self, name: str, run_dir: Path) -> int | None:
        """The step count the CLI announced ("training N steps"), else train.max_steps."""
        log = self.state_dir / f"{name}.log"
        if log.is_file():
            found = PLAN.findall(log.read_text(encoding="utf-8", errors="replace"))
            if found:
                return int(found[-1])
        try:
            cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
            return int(cfg["train"]["max_steps"])
        except (OSError, TypeError, KeyError, ValueError, yaml.YAMLError):
            return None

    def _error(self, name: str) -> str | None:
        log = self.state_dir / f"{name}.log"
        if not log.is_file():
            return None
        lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()
                 if ln.strip()]
        return lines[-1][-500:] if lines else None

    def log_tail(self, name: str, chars: int = 4000) -> str:
        log = self.state_dir / f"{check_name(name)}.log"
        return log.read_text(encoding="utf-8", errors="replace")[-chars:] if log.is_file() else ""

    def start(self, name: str, config_yaml: str) -> dict[str, Any]:
        """Train the (already validated) config into RUNS/NAME as a CLI process."""
        if self.status(name) == "running":
            raise RunError(f"run {name!r} is running; stop it first or pick another name")
        if self.dir(name).exists() and any(self.dir(name).iterdir()):
            raise RunError(f"run {name!r} already exists in {self.root}; pick another name "
                           "(or resume it)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / f"{name}.yaml"
        config.write_text(config_yaml, encoding="utf-8")
        (self.state_dir / f"{name}.log").unlink(missing_ok=True)
        return self._launch(name, [str(config)], start_step=0)

    def resume(self, name: str) -> dict[str, Any]:
        """Continue an interrupted run from its newest checkpoint (`tunelab train --resume`)."""
        status = self.status(name)
        if status != "interrupted":
            raise RunError(f"run {name!r} is {status}; only an interrupted run (one with a "
                           "checkpoint) can be resumed")
        config = self.state_dir / f"{name}.yaml"
        if not config.is_file():  # a run started from the CLI: its own saved config
            config = self.dir(name) / "config.yaml"
        step = max((r.get("step", 0) for r in read_metrics(self.dir(name))), default=0)
        return self._launch(name, [str(config), "--resume"], start_step=step)

    def _launch(self, name: str, args: list[str], start_step: int) -> dict[str, Any]:
        state = self.state_dir / f"{name}.json"
        state.unlink(missing_ok=True)
        command = [self.python, "-m", "tunelab", "train", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        sup = subprocess.Popen([self.python, "-m", "tunelab.ui.supervise", str(state),
                                str(start_step), "--", *command], start_new_session=True,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env)
        deadline = time.time() + 30  # the supervisor records the pid at once
        while "pid" not in self._state(name) and sup.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        return self.describe(name)

    def stop(self, name: str) -> dict[str, Any]:
        """SIGTERM to the training process: it finishes the step, checkpoints and exits."""
        pid = self._state(name).get("pid")
        if not _alive(pid):
            raise RunError(f"run {name!r} is not running here")
        os.kill(pid, signal.SIGTERM)
        return self.describe(name)
