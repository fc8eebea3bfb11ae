"""train.report_to: each tracker receives the metrics.jsonl records, the config and the files,
read back with the tracker's own reader."""

from __future__ import annotations

import builtins
import math
from pathlib import Path

import pytest

from tunelab.train.trackers import TrackerError, Trackers, require, scalars

CONFIG = {"task": "classification", "train": {"lr": 0.005, "max_steps": 3},
          "method": {"name": "lora", "targets": ["query", "value"]}}
RECORDS = [{"step": 1, "train_loss": 0.9, "lr": 0.005, "tokens_per_s": 100.0, "epoch": 0.1},
           {"step": 2, "train_loss": 0.7, "lr": 0.004, "tokens_per_s": 110.0, "epoch": 0.2},
           {"step": 2, "split": "dev", "accuracy": 0.75, "loss": 0.6},
           {"step": 3, "train_loss": 0.5, "lr": 0.003, "tokens_per_s": 120.0, "epoch": 0.3}]


def _artifacts(run_dir: Path) -> list[Path]:
    from PIL import Image

    plot = run_dir / "plot.png"
    Image.new("RGB", (8, 6), (200, 10, 10)).save(plot)
    summary = run_dir / "summary.json"
    summary.write_text('{"best": 0.75}\n')
    return [plot, summary]


def _feed(names: list[str], run_dir: Path) -> None:
    trackers = Trackers.from_names(names, run_dir, CONFIG)
    for record in RECORDS:
        trackers.log(record)
    trackers.finish(_artifacts(run_dir))


def test_scalars_name_train_and_dev_numbers():
    assert scalars(RECORDS[0]) == {"train/loss": 0.9, "train/lr": 0.005,
                                   "train/tokens_per_s": 100.0, "train/epoch": 0.1}
    assert scalars(RECORDS[2]) == {"dev/accuracy": 0.75, "dev/loss": 0.6}


def test_tensorboard_event_file_holds_the_scalars_config_and_plot(tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _feed(["tensorboard"], tmp_path)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    losses = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in losses] == [1, 2, 3]
    assert all(math.isclose(v, r["train_loss"], rel_tol=1e-6)
               for (_, v), r in zip(losses, [RECORDS[0], RECORDS[1], RECORDS[3]]))
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("dev/accuracy")] == [(2, 0.75)]
    images = acc.Images("plot")
    assert len(images) == 1 and (images[0].width, images[0].height) == (8, 6)
    texts = acc.Tensors("config/text_summary")
    assert b'"max_steps": 3' in texts[0].tensor_proto.string_val[0]


def test_mlflow_sqlite_store_holds_metrics_params_and_artifacts(tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _feed(["mlflow"], tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tunelab")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert run.data.params["train.lr"] == "0.005"
    assert run.data.params["method.targets"] == "['query', 'value']"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.9), (2, 0.7), (3, 0.5)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id,
                                                                 "dev/accuracy")] == [(2, 0.75)]
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert names == ["plot.png", "summary.json"]
    assert (tmp_path / "mlartifacts").is_dir()
    local = Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path / "dl")))
    assert local.read_text() == '{"best": 0.75}\n'


def test_wandb_offline_run_dir_is_written(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    _feed(["wandb"], tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (data,) = runs[0].glob("run-*.wandb")
    assert data.stat().st_size > 0
    # the offline log is W&B's record stream (protobuf); its reader is internal, so read
    # the bytes: each scalar name, the config and the artifact's files are in it
    raw = data.read_bytes()
    for needle in (b"train/loss", b"dev/accuracy", b"max_steps", b"plot.png", b"summary.json"):
        assert needle in raw, needle


def test_missing_package_names_the_extra(tmp_path: Path, monkeypatch):
    real_import = builtins.__import__

    def no_mlflow(name, *args, **kwargs):
        if name.startswith("mlflow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_mlflow)
    with pytest.raises(TrackerError, match=r"pip install tunelab\[mlflow\]"):
        Trackers.from_names(["mlflow"], tmp_path, CONFIG)
    monkeypatch.setattr(builtins, "__import__", real_import)
    import importlib.util

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real_find(name, *a))
    require(["tensorboard", "mlflow"])
    with pytest.raises(TrackerError, match=r"wandb needs its package.*pip install tunelab\[wandb\]"):
        require(["tensorboard", "wandb"])


def test_unknown_tracker_and_none(tmp_path: Path):
    with pytest.raises(TrackerError, match="choose from tensorboard, mlflow, wandb"):
        Trackers.from_names(["comet"], tmp_path, CONFIG)
    nothing = Trackers.from_names([], tmp_path, CONFIG)
    nothing.log(RECORDS[0])
    nothing.finish([])
    assert list(tmp_path.iterdir()) == []


def test_a_run_with_report_to_logs_what_metrics_jsonl_holds(tmp_path: Path, monkeypatch,
                                                           tiny_model_dir: Path):
    """End to end: `train` with report_to [tensorboard, mlflow]; every train loss and dev
    accuracy in metrics.jsonl is in the event file and in the MLflow run, step for step."""
    import json

    from conftest import tiny_config, toy_sentiment_files
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunelab.config.load import validate
    from tunelab.recipes.run import train

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(tmp_path), run, max_steps=6,
                       eval_every=3, log_every=2)
    tree["train"]["report_to"] = ["tensorboard", "mlflow"]
    train(validate(tree), log=lambda _: None)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    want_loss = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    want_acc = [(r["step"], r["accuracy"]) for r in records if r.get("split") == "dev"]
    assert len(want_loss) == 3 and len(want_acc) == 3  # steps 2, 4, 6 / 0, 3, 6

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in got] == [s for s, _ in want_loss]
    assert all(math.isclose(g, w, rel_tol=1e-6) for (_, g), (_, w) in zip(got, want_loss))
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("dev/accuracy")] == [
        (s, round(v, 6)) for s, v in want_acc]

    client = MlflowClient(tracking_uri=f"sqlite:///{run.resolve() / 'mlflow.db'}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("tunelab").experiment_id])
    history = sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id,
                                                                          "train/loss"))
    assert [s for s, _ in history] == [s for s, _ in want_loss]
    assert all(math.isclose(g, w, rel_tol=1e-6) for (_, g), (_, w) in zip(history, want_loss))
    assert mlrun.info.status == "FINISHED"
    assert sorted(a.path for a in client.list_artifacts(mlrun.info.run_id)) == [
        "plot.png", "summary.json"]
