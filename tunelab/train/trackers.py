"""Experiment trackers (`train.report_to`): TensorBoard, MLflow, W&B see what metrics.jsonl sees.

metrics.jsonl stays the record; a tracker is a copy for the tools people already watch.
Each tracker is one small class behind the same three calls (start with the config as
hyperparameters, `log` every record, `finish` with the run's files as artifacts), and its
package is imported only when asked for, so a missing one is a clear error naming the extra.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

from tunelab.errors import ConfigError

TRACKERS = ("tensorboard", "mlflow", "wandb")
EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class TrackerError(ConfigError):
    """A tracker was asked for but its package is missing (or its store cannot be opened)."""


class Tracker(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...

    def finish(self, artifacts: list[Path]) -> None: ...


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train.lr": 0.001, ...}: nested config or record keys as one level."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.jsonl record, named as the tools group them: dev records as
    dev/KEY, training records as train/KEY ("train_loss" -> train/loss)."""
    split = record.get("split", "train")
    out = {}
    for key, value in flat({k: v for k, v in record.items() if k not in ("step", "split")}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            name = key[len("train_"):] if split == "train" and key.startswith("train_") else key
            out[f"{split}/{name.replace('.', '/')}"] = float(value)
    return out


def _missing(name: str) -> TrackerError:
    return TrackerError(f"train.report_to: {name} needs its package, which is not installed; "
                        f"pip install tunelab[{EXTRAS[name]}] (or drop {name} from report_to)")


class TensorBoard:
    """Event files in RUN/tensorboard (`tensorboard --logdir RUN/tensorboard`)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        try:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError:
            raise _missing("tensorboard") from None
        self.dir = run_dir / "tensorboard"
        self.writer = SummaryWriter(str(self.dir))
        params = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                  for k, v in flat(config).items()}
        for summary in hparams(params, {}):
            self.writer.file_writer.add_summary(summary)
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def finish(self, artifacts: list[Path]) -> None:
        for path in artifacts:
            if path.suffix == ".png":
                import numpy as np
                from PIL import Image

                image = np.asarray(Image.open(path).convert("RGB"))
                self.writer.add_image(path.stem, image, dataformats="HWC")
            else:
                self.writer.add_text(path.name, f"`{path}`")
        self.writer.close()


class MLflow:
    """One MLflow run in experiment "tunelab"; the store is MLFLOW_TRACKING_URI, else a local
    SQLite store RUN/mlflow.db with artifacts in RUN/mlartifacts (no server needed; MLflow 3
    keeps its plain-file store in maintenance mode)."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise _missing("mlflow") from None
        import logging

        for noisy in ("mlflow", "alembic"):  # "creating tables" lines are not the run's news
            logging.getLogger(noisy).setLevel(logging.WARNING)
        local = run_dir.resolve()
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{local / 'mlflow.db'}"
        self.client, self._metric = MlflowClient(tracking_uri=self.uri), Metric
        experiment = self.client.get_experiment_by_name("tunelab")
        exp_id = experiment.experiment_id if experiment else self.client.create_experiment(
            "tunelab", artifact_location=(local / "mlartifacts").as_uri())
        self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat(config).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, values: dict[str, float], step: int) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [self._metric(k, v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, artifacts: list[Path]) -> None:
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id)


class WandB:
    """A W&B run in RUN/wandb; offline (synced later with `wandb sync`) unless WANDB_MODE
    says otherwise or an API key is set."""

    def __init__(self, run_dir: Path, config: dict[str, Any]):
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY")
                                                else "offline")
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "tunelab"),
                              name=run_dir.name, dir=str(run_dir), config=config, mode=mode,
                              reinit="create_new")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, artifacts: list[Path]) -> None:
        if artifacts:
            art = self.wandb.Artifact(f"run-{self.run.id}", type="run")
            for path in artifacts:
                art.add_file(str(path))
            self.run.log_artifact(art)
        self.run.finish()
        self.wandb.teardown()  # waits for the W&B service to write everything out


MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def require(names: list[str]) -> None:
    """Fail before any weights load when a named tracker's package is missing."""
    import importlib.util

    for name in names:
        if name in MODULES and importlib.util.find_spec(MODULES[name]) is None:
            raise _missing(name)


KINDS: dict[str, type] = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


class Trackers:
    """Every tracker the config names, fed together; none named: every call does nothing."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    @classmethod
    def from_names(cls, names: list[str], run_dir: Path, config: dict[str, Any]) -> Trackers:
        unknown = [n for n in names if n not in KINDS]
        if unknown:
            raise TrackerError(f"train.report_to: unknown tracker {unknown[0]!r}; choose from "
                               f"{', '.join(TRACKERS)}")
        return cls([KINDS[n](Path(run_dir), config) for n in dict.fromkeys(names)])

    def log(self, record: dict[str, Any]) -> None:
        """One metrics.jsonl record (its "step" is the x axis)."""
        if self.trackers:
            values = scalars(record)
            for tracker in self.trackers:
                tracker.log(values, int(record["step"]))

    def finish(self, artifacts: list[Path] | None = None) -> None:
        """Upload the files that exist (plot, summary, report) and close every tracker."""
        files = [Path(p) for p in artifacts or [] if p is not None and Path(p).is_file()]
        for tracker in self.trackers:
            tracker.finish(files)
