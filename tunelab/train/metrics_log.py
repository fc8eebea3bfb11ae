"""metrics.jsonl: one JSON record per line (training windows and dev evaluations), written
by rank 0 and flushed per record; `history` holds every record of the run so far."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    def __init__(self, run_dir: Path, write: bool = True,
                 sinks: Sequence[Callable[[dict[str, Any]], None]] = ()):
        """`sinks` see each record after it is on disk (train.report_to's trackers)."""
        self.path, self.write_file, self.sinks = run_dir / METRICS_FILE, write, list(sinks)
        self.history: list[dict[str, Any]] = []
        self._file: Any = None

    @contextmanager
    def opened(self) -> Iterator["MetricsLog"]:
        """Appending (rank 0; the others write nowhere) while inside."""
        self._file = self.path.open("a", encoding="utf-8") if self.write_file \
            else open(os.devnull, "w")
        try:
            yield self
        finally:
            self._file.close()
            self._file = None

    def write(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for sink in self.sinks:
            sink(record)

    def truncate(self, step: int) -> list[dict[str, Any]]:
        """Resuming: drop records an interrupted run logged after its last checkpoint (`step`;
        -1 drops all); the rest become the history."""
        self.history = _truncate_metrics(self.path, step, write=self.write_file)
        return self.history


class Window:
    """Sums over the optimizer steps since the last training record. Throughput counts
    optimizer steps only: evaluation and checkpoints are timed apart."""

    __slots__ = ("loss", "n", "tokens", "time")

    def __init__(self) -> None:
        self.loss, self.n, self.tokens, self.time = 0.0, 0, 0, 0.0

    def add(self, loss: float, n: float, tokens: int, seconds: float) -> None:
        self.time += seconds
        self.loss += loss
        self.n += n
        self.tokens += tokens

    def record(self, step: int, lr: float, epoch: float, extra: dict[str, float]
               ) -> dict[str, Any]:
        """The training record of these steps (`extra`: the method hook's numbers)."""
        return {"step": step, "train_loss": self.loss / max(self.n, 1), "lr": lr,
                "tokens_per_s": self.tokens / max(self.time, 1e-9), "epoch": epoch, **extra}


def _truncate_metrics(path: Path, step: int, write: bool = True) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    kept = [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= step]
    if write:
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept
