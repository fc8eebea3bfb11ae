"""Crash-safe writes: a crash, Ctrl-C or SIGKILL mid-write never leaves a half-written file or
directory under the final name.

A file (atomic_write) or a whole directory (atomic_dir) is written under a hidden temp name
beside its destination, fsynced (every file, then the directory holding them), renamed into
place, and the parent directory is fsynced so the rename itself survives a power cut. Readers
only ever see the old version or the new one.

A full disk (ENOSPC/EDQUOT) while saving raises DiskFullError, an OSError naming the file;
the layers that can import tunelab.errors turn it into their own typed error (a checkpoint's
into CheckpointError, an adapter's into AdapterError...), which the CLI prints as one line.

Test hook: `TUNELAB_FAULT=<point>` (or `<point>@N`, its N-th pass) makes this process SIGKILL
itself at that fault_point, as a power cut or the OOM killer would. The points are
`write:<file name>` (the temp file is written, not yet synced or renamed), `dir:<dir name>`
(the temp directory is filled, not yet synced or renamed), `swap:<dir name>` (the previous
directory moved aside, the new one not yet in place) and the savers' own (checkpoint:half,
adapter:half, report:half). Unset, fault_point is one comparison with None.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

FAULT_ENV = "TUNELAB_FAULT"
_FAULT = os.environ.get(FAULT_ENV) or None  # read once: a test sets it in a fresh process
_passes: dict[str, int] = {}
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """The disk (or quota) filled up while saving `filename`; the previous version is intact."""

    def __init__(self, path: Path):
        super().__init__(errno.ENOSPC, f"{path}: cannot save it, the disk is full (no space "
                         "left on device); the previous version, if any, is unchanged. Free some "
                         "space and run the command again", str(path))

    def __str__(self) -> str:
        return str(self.strerror)


def fault_point(name: str) -> None:
    """SIGKILL this process when TUNELAB_FAULT names this point (tests of crash safety)."""
    if _FAULT is None:
        return
    want, _, nth = _FAULT.partition("@")
    if want == name:
        _passes[name] = _passes.get(name, 0) + 1
        if _passes[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT, as Python raises it or as a library's own error text carries it
    (safetensors: "StorageFull", "No space left on device")."""
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    text = str(exc)
    return "No space left on device" in text or "StorageFull" in text or "Disk quota exceeded" in text


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in _FULL:
            raise DiskFullError(path) from exc
        raise
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (a rename into it) durable; a no-op where directories
    cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in _FULL:
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first, then `root`."""
    for here, dirs, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(here, name)):
                fsync_file(Path(here, name))
        for name in dirs:
            fsync_dir(Path(here, name))
    fsync_dir(root)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path), fsync it, rename it over `path` (same directory, so the swap is
    atomic) and fsync the directory. A full disk raises DiskFullError; `path` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        fault_point(f"write:{path.name}")
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """atomic_write of UTF-8 text."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def _stale(path: Path, kind: str) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.{kind}*")) if path.parent.is_dir() else []


def recover_dir(path: Path) -> None:
    """Undo a replacement killed between its two renames: `path` is missing but the previous
    version waits under its hidden `.old` name. Temp directories of killed writers go."""
    if not path.exists():
        for old in _stale(path, "old")[-1:]:
            os.replace(old, path)
    for debris in _stale(path, "old") + _stale(path, "tmp"):
        shutil.rmtree(debris, ignore_errors=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temp directory to fill; on success it is fsynced and replaces `path` as a
    whole. Killed at any point, `path` is the old directory or the new one (a kill between the
    two renames of a replacement is undone by recover_dir, which the next atomic_dir runs)."""
    path = Path(path)
    recover_dir(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        fault_point(f"dir:{path.name}")
        fsync_tree(tmp)
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        if path.exists():
            os.replace(path, old)
            fault_point(f"swap:{path.name}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except Exception as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from exc
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
