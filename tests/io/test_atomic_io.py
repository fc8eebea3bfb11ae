"""tunelab.io: files and directories are fsynced before the rename that publishes them; a
process SIGKILLed at any fault point leaves the previous version whole; a full disk is a
typed error naming the file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from tunelab import io
from tunelab.errors import AdapterError
from tunelab.io import DiskFullError, atomic_dir, atomic_write, write_text
from tunelab.methods.peft_format import CONFIG_FILE, WEIGHTS_FILE, write_adapter


def killed_at(point: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with TUNELAB_FAULT=point."""
    env = {**os.environ, io.FAULT_ENV: point, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_fault_point_is_a_no_op_when_unset(monkeypatch):
    monkeypatch.setattr(io, "_FAULT", None)
    io.fault_point("write:anything")  # returns: nothing to kill


@pytest.mark.parametrize("point", ["write:a.json", "write:a.json@2"])
def test_a_kill_mid_write_leaves_the_previous_file(tmp_path, point):
    (tmp_path / "a.json").write_text('{"v": 1}')
    code = ("from pathlib import Path; from tunelab.io import write_text\n"
            "write_text(Path('b.json'), 'x')\n"  # another file: does not count as a pass
            "write_text(Path('a.json'), '{\"v\": 2}')\n"
            "write_text(Path('a.json'), '{\"v\": 3}')\n")
    proc = killed_at(point, code, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    expected = 1 if point.endswith("a.json") else 2  # @2: the second write is the one killed
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": expected}


@pytest.mark.parametrize("point", ["dir:out@2", "swap:out"])  # swap: only a replacement
def test_a_kill_mid_directory_write_leaves_the_previous_directory(tmp_path, point):
    code = ("from pathlib import Path; from tunelab.io import atomic_dir\n"
            "for v in ('1', '2'):\n"
            "    with atomic_dir(Path('out')) as tmp:\n"
            "        (tmp / 'a').write_text(v); (tmp / 'b').write_text(v)\n")
    proc = killed_at(point, code, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # killed before any rename the old directory is in place; killed between the two renames
    # it is back after recover_dir (what the next atomic_dir of that path runs first)
    assert (tmp_path / "out").is_dir() == point.startswith("dir:")
    io.recover_dir(tmp_path / "out")
    assert (tmp_path / "out" / "a").read_text() == (tmp_path / "out" / "b").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the temp directory is gone too


def test_files_and_directories_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        return real_fsync(fd)

    def replace(a, b):
        events.append(f"rename {Path(a).name} -> {Path(b).name}")
        return real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text(tmp_path / "f.txt", "x")
    pid = os.getpid()
    assert events == [f"fsync .f.txt.tmp{pid}", f"rename .f.txt.tmp{pid} -> f.txt",
                      f"fsync {tmp_path.name}"]
    events.clear()
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w").write_text("w")
    assert events == ["fsync w", "fsync sub", f"fsync .d.tmp{pid}",
                      f"rename .d.tmp{pid} -> d", f"fsync {tmp_path.name}"]


def _disk_full(*_args):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_a_typed_error_and_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.txt"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(DiskFullError) as exc:
        write_text(path, "new")
    assert str(exc.value) == (f"{path}: cannot save it, the disk is full (no space left on "
                              "device); the previous version, if any, is unchanged. Free some "
                              "space and run the command again")
    assert exc.value.errno == errno.ENOSPC
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    monkeypatch.undo()

    def write_fails(p: Path) -> None:  # the writer itself hits ENOSPC (os.write, file.write)
        p.write_text("ne")
        raise OSError(errno.ENOSPC, "No space left on device", str(p))

    with pytest.raises(DiskFullError, match="a.txt: cannot save it, the disk is full"):
        atomic_write(path, write_fails)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def _adapter(value: float) -> tuple[dict, dict]:
    return ({"peft_type": "LORA", "r": 1, "v": value},
            {"base_model.model.x.lora_A.weight": torch.full((1, 2), value)})


def test_a_full_disk_during_an_adapter_save_is_an_adapter_error(tmp_path, monkeypatch):
    out = tmp_path / "adapter"
    write_adapter(out, *_adapter(1.0))
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(AdapterError, match=f"{out}: cannot save it, the disk is full"):
        write_adapter(out, *_adapter(2.0))
    monkeypatch.undo()
    assert json.loads((out / CONFIG_FILE).read_text())["v"] == 1.0
    assert load_file(str(out / WEIGHTS_FILE))["base_model.model.x.lora_A.weight"][0, 0] == 1.0


@pytest.mark.parametrize("point", ["adapter:half", "dir:adapter", "swap:adapter"])
def test_a_kill_mid_adapter_save_leaves_the_previous_adapter(tmp_path, point):
    """Weights and config are always of one save: never new weights with the old config."""
    write_adapter(tmp_path / "adapter", *_adapter(1.0))
    code = ("import torch; from pathlib import Path\n"
            "from tunelab.methods.peft_format import write_adapter\n"
            "write_adapter(Path('adapter'), {'peft_type': 'LORA', 'r': 1, 'v': 2.0},\n"
            "              {'base_model.model.x.lora_A.weight': torch.full((1, 2), 2.0)})\n")
    proc = killed_at(point, code, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    io.recover_dir(tmp_path / "adapter")  # what the next save does first (swap: only)
    out = tmp_path / "adapter"
    assert json.loads((out / CONFIG_FILE).read_text())["v"] == 1.0
    assert load_file(str(out / WEIGHTS_FILE))["base_model.model.x.lora_A.weight"][0, 0] == 1.0
    assert sorted(p.name for p in out.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
