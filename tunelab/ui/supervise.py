"""`python -m tunelab.ui.supervise STATE START_STEP -- tunelab train ...`: run one training
CLI and record its pid and exit code in STATE (a JSON file; only this process writes it), so a UI restarted later can tell a
running run from a failed or interrupted one. It lives in its own session: closing the page
or stopping the UI never signals it; `stop` signals the training process alone (SIGTERM, so
it checkpoints)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tunelab.io import atomic_write


def write_state(path: Path, **changes: object) -> None:
    state = json.loads(path.read_text()) if path.is_file() else {}
    state.update(changes)
    atomic_write(path, lambda p: p.write_text(json.dumps(state, indent=2) + "\n"))


def main(argv: list[str]) -> int:
    state, start_step, command = Path(argv[0]), int(argv[1]), argv[argv.index("--") + 1:]
    log = state.with_suffix(".log")
    # the training process gets the signals; this one only waits and writes the outcome.
    # A Python handler (unlike SIG_IGN) is reset by exec, so the child still stops on SIGTERM.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: None)
    with log.open("ab") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        write_state(state, pid=child.pid, supervisor=os.getpid(), exit_code=None,
                    started=time.time(), start_step=start_step, command=command)
        code = child.wait()
    write_state(state, exit_code=code, ended=time.time())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
