"""Ctrl-C / SIGTERM: finish the current step, save a checkpoint, then stop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tunelab.errors import TunelabError


class Interrupted(TunelabError):
    """Raised after the checkpoint is written; the CLI exits 130."""

    exit_code = 130


class StopFlag:
    def __init__(self) -> None:
        self.signal: str | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """A flag set by the first SIGINT/SIGTERM; a second Ctrl-C exits at once."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: object) -> None:
        flag.signal = signal.Signals(signum).name
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the second Ctrl-C is final

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
