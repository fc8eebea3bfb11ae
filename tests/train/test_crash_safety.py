"""Crash-safe saves, proved by killing the process (SIGKILL, via TUNELAB_FAULT) at chosen
points inside a checkpoint write, an adapter save, a merge, a tune study's best-config write
and a report write: the previous checkpoint or file is whole afterwards, and `--resume`
reaches the same final weights as an uninterrupted run. A full disk during a checkpoint is
one line from the CLI and leaves the previous checkpoint loadable."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import REPO, synthetic_rows, tiny_config
from tunelab.cli import main
from tunelab.io import FAULT_ENV
from tunelab.train.checkpoint import list_checkpoints

KILLED = -signal.SIGKILL


def tunelab(args: list[str], cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    """`python -m tunelab ARGS` on this checkout, SIGKILLed at `fault` when given."""
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env.update({"OMP_NUM_THREADS": "1", **({FAULT_ENV: fault} if fault else {}),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))})
    return subprocess.run([sys.executable, "-m", "tunelab", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory) -> dict:
    """A config file (12 steps, a checkpoint every 4, dropout: the RNG state matters) and
    its uninterrupted run, trained in a subprocess as every crashed run is."""
    root = tmp_path_factory.mktemp("crash")
    data = {}
    for split, n, seed in (("train", 96, 1), ("dev", 32, 2)):
        data[split] = root / f"{split}.tsv"
        data[split].write_text("sentence\tlabel\n" + "".join(
            f"{t}\t{y}\n" for t, y in synthetic_rows(n, seed)))
    tree = tiny_config(tiny_model_dir, data, root / "straight")
    tree["model"]["dropout"] = 0.2
    config = root / "straight.yaml"
    config.write_text(yaml.safe_dump(tree))
    done = tunelab(["train", str(config)], root)
    assert done.returncode == 0, done.stderr
    return {"root": root, "tree": tree, "straight": root / "straight"}


def config_for(setup: dict, name: str) -> Path:
    path = setup["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**setup["tree"], "output_dir": str(setup["root"] / name)}))
    return path


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = adapter(a), adapter(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("fault, newest", [
    ("checkpoint:half@2", "step-0000004"),   # step 8's weights written, optimizer not yet
    ("dir:step-0000008", "step-0000004"),    # step 8 complete in its temp dir, not renamed
    ("adapter:half", "step-0000012"),        # the final adapter half-written
])
def test_a_kill_mid_save_resumes_to_the_uninterrupted_weights(setup, fault, newest):
    name = "killed-" + fault.split(":")[0]
    config, run = config_for(setup, name), setup["root"] / name
    proc = tunelab(["train", str(config)], setup["root"], fault)
    assert proc.returncode == KILLED, proc.stderr
    assert list_checkpoints(run / "checkpoints")[-1].name == newest  # whole, and the newest
    assert not (run / "adapter").exists()  # no half-written adapter under its final name
    resumed = tunelab(["train", str(config), "--resume"], setup["root"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {run / 'checkpoints' / newest}" in resumed.stdout
    assert_same_weights(run, setup["straight"])
    assert not list((run / "checkpoints").glob(".*"))  # the killed write's temp dir is gone


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last(setup, monkeypatch,
                                                                          capsys):
    config, run = config_for(setup, "full-disk"), setup["root"] / "full-disk"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:  # the disk fills up while step 8's checkpoint is written
        if "step-0000008" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]  # after the progress bar's last redraw
    lines = err.splitlines()[1:] if err.startswith("train:") else err.splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0] == (f"error: {run / 'checkpoints' / 'step-0000008'}: cannot save it, the disk is "
                   "full (no space left on device); the previous version, if any, is unchanged. "
                   "Free some space and run the command again (checkpoint step-0000008 was not "
                   "written; the run's earlier checkpoints are intact)")
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000004"]
    monkeypatch.undo()  # space freed: the run resumes from step 4
    assert main(["train", str(config), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out


@pytest.mark.parametrize("fault", ["merge:half", "dir:merged", "swap:merged"])
def test_a_kill_mid_merge_leaves_the_previous_merge(setup, fault):
    root, out = setup["root"], setup["root"] / "merged"
    if not out.is_dir():
        assert tunelab(["merge", str(setup["straight"]), str(out)], root).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = tunelab(["merge", str(setup["straight"]), str(out)], root, fault)
    assert proc.returncode == KILLED, proc.stderr
    if fault.startswith("swap:"):  # killed between the renames: the next merge restores it
        assert not out.exists()
        again = tunelab(["merge", str(setup["straight"]), str(out)], root)
        assert again.returncode == 0, again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    if fault.startswith("swap:"):
        assert not list(root.glob(".merged*"))  # the set-aside copy went back in place


def test_a_kill_mid_report_leaves_the_previous_report(setup):
    root, run = setup["root"], setup["straight"]
    first = tunelab(["report", str(run), "--no-data"], root)
    assert first.returncode == 0, first.stderr
    page, md = run / "report" / "report.html", run / "report" / "report.md"
    page.write_bytes(page.read_bytes() + b"<!-- the earlier report -->")
    md.write_bytes(md.read_bytes() + b"<!-- the earlier report -->")
    html_before, md_before = page.read_bytes(), md.read_bytes()
    for fault in ("report:half", "write:report.html", "write:report.md"):
        proc = tunelab(["report", str(run), "--no-data"], root, fault)
        assert proc.returncode == KILLED, proc.stderr
        assert md.read_bytes() == md_before  # the page is written first, then its twin
        if fault != "write:report.md":
            assert page.read_bytes() == html_before
        else:  # the new page is in place, whole
            assert page.read_text().rstrip().endswith("</html>")


def test_a_kill_mid_tune_keeps_the_study_and_its_best_config(setup):
    root = setup["root"]
    tree = {**setup["tree"], "output_dir": str(root / "study"),
            "search": {"train.lr": {"log_uniform": [1e-3, 1e-2]}}}
    tree["train"] = {**tree["train"], "max_steps": 4, "eval_every": 4, "checkpoint_every": 4}
    config = root / "tune.yaml"
    config.write_text(yaml.safe_dump(tree))
    first = tunelab(["tune", str(config), "--trials", "1", "--no-prune"], root)
    assert first.returncode == 0, first.stderr
    best = root / "study" / "best.yaml"
    before = best.read_bytes()
    # trial 1 runs and is recorded in study.db; the kill comes while best.yaml is rewritten
    proc = tunelab(["tune", str(config), "--trials", "2", "--no-prune"], root, "write:best.yaml")
    assert proc.returncode == KILLED, proc.stderr
    assert best.read_bytes() == before
    # a kill inside a trial's checkpoint write: the study and best.yaml are untouched
    proc = tunelab(["tune", str(config), "--trials", "3", "--no-prune"], root, "checkpoint:half")
    assert proc.returncode == KILLED, proc.stderr
    assert best.read_bytes() == before
    again = tunelab(["tune", str(config), "--trials", "3", "--no-prune"], root)
    assert again.returncode == 0, again.stderr
    assert "2 finished trial(s), running 1 more" in again.stdout
    assert best.read_text().startswith("# tunelab tune: trial")
