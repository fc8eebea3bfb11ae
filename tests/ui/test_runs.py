"""Run status from the files alone (what a restarted UI sees), and a run that fails shows
its error line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient
from ui_fixtures import form, runs_dir  # noqa: F401  (a fixture)

from tunelab.commands.ui import build
from tunelab.ui.runs import Runs, read_metrics


def _run_dir(root: Path, name: str, records: list[dict], **files: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("train:\n  max_steps: 40\n")
    (path / "run.json").write_text(json.dumps({"task": "classification", "method": "lora"}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for key, text in files.items():
        (path / key.replace("__", "/")).parent.mkdir(parents=True, exist_ok=True)
        (path / key.replace("__", "/")).write_text(text)
    return path


def test_status_and_progress_from_the_run_files(tmp_path: Path):
    records = [{"step": s, "train_loss": 1.0 / s, "lr": 0.01} for s in (10, 20)]
    _run_dir(tmp_path, "done", records, **{"summary.json": json.dumps(
        {"total_steps": 20, "metric": "accuracy", "final_dev": {"accuracy": 0.8}})})
    _run_dir(tmp_path, "stopped", records, **{"checkpoints__step-20__state.pt": "x"})
    _run_dir(tmp_path, "broken", records[:1])
    runs = Runs(tmp_path)
    assert runs.names() == ["broken", "done", "stopped"]
    rows = {n: runs.describe(n) for n in runs.names()}
    assert [rows[n]["status"] for n in runs.names()] == ["failed", "finished", "interrupted"]
    assert (rows["done"]["total_steps"], rows["done"]["final"]) == (20, {"accuracy": 0.8})
    assert (rows["stopped"]["step"], rows["stopped"]["total_steps"]) == (20, 40)
    assert rows["stopped"]["last_loss"] == 1.0 / 20


def test_metrics_reader_leaves_a_half_written_line(tmp_path: Path):
    path = _run_dir(tmp_path, "r", [{"step": 1, "train_loss": 0.5}])
    with (path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 2, "train_lo')
    assert read_metrics(path) == [{"step": 1, "train_loss": 0.5}]
    assert read_metrics(path, since=1) == []


def test_a_live_process_recorded_by_the_supervisor_is_running(tmp_path: Path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "tunelab"])
    try:
        cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
        deadline = time.time() + 30  # until the child has exec'd (before, /proc shows pytest)
        while b"tunelab" not in cmdline.read_bytes() and time.time() < deadline:
            time.sleep(0.05)
        (tmp_path / ".ui").mkdir()
        (tmp_path / ".ui" / "r.json").write_text(json.dumps({"pid": sleeper.pid,
                                                             "exit_code": None}))
        assert Runs(tmp_path).status("r") == "running"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert Runs(tmp_path).status("r") == "failed"  # gone without an exit code or checkpoint


def test_a_failing_run_is_failed_with_its_error(runs_dir: Path, tiny_model_dir: Path,  # noqa: F811
                                               tmp_path: Path):
    data = {"train": tmp_path / "train.tsv", "dev": tmp_path / "dev.tsv"}  # never written
    client = TestClient(build(runs_dir))
    r = client.post("/api/runs", json=form(tiny_model_dir, data, "bad", 4))
    assert r.status_code == 200, r.text
    deadline = time.time() + 120
    while (row := client.get("/api/runs/bad").json())["status"] == "running" \
            and time.time() < deadline:
        time.sleep(0.5)
    state = json.loads((runs_dir / ".ui" / "bad.json").read_text())
    assert row["status"] == "failed" and state["exit_code"] not in (0, 130, None)
    assert str(data["train"]) in row["error"] and "Traceback" not in row["log"]
    again = client.post("/api/runs/bad/resume")
    assert again.status_code == 409 and "only an interrupted run" in again.json()["error"]
