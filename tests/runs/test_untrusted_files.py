"""Untrusted files: loading a checkpoint, an adapter, a model or a run directory never runs
code (a pickle whose __reduce__ calls os.system is refused with a typed error and the command
never runs), a model directory's own Python is never imported, and output_dir can only make
tunelab delete a directory that is a tunelab run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from tunelab.config import validate
from tunelab.errors import AdapterError, CheckpointError, ModelError
from tunelab.models import load_classifier
from tunelab.recipes.run import train
from tunelab.runs.trained import load_trained


def quiet(_: str) -> None:
    pass


class Bomb:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bomb_files(tmp_path: Path) -> tuple[Path, bytes, Path]:
    """(marker, a raw pickle bomb, a torch.save zip holding one)."""
    marker = tmp_path / "PWNED"
    zipped = tmp_path / "bomb.pt"
    torch.save({"optimizer": Bomb(marker)}, zipped)
    raw = pickle.dumps(Bomb(marker))
    assert not marker.exists()
    return marker, raw, zipped


@pytest.fixture
def run_dir(tiny_model_dir, tiny_data, tmp_path) -> Path:
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=4)
    train(validate(tree), log=quiet)
    return tmp_path / "run"


def test_a_pickle_bomb_in_a_checkpoint_is_refused(run_dir, tmp_path, tiny_model_dir, tiny_data):
    marker, _, zipped = bomb_files(tmp_path)
    ckpt = run_dir / "checkpoints" / "step-0000004"
    shutil.copyfile(zipped, ckpt / "optimizer.pt")
    tree = tiny_config(tiny_model_dir, tiny_data, run_dir, max_steps=4)
    with pytest.raises(CheckpointError, match=f"(?s){ckpt}: cannot read checkpoint .*Weights "
                                              "only load failed"):
        train(validate(tree), resume=True, log=quiet)
    assert not marker.exists()


@pytest.mark.parametrize("as_name", ["adapter_model.safetensors", "adapter_model.bin"])
def test_a_pickle_bomb_as_an_adapter_is_refused(run_dir, tmp_path, as_name):
    marker, raw, zipped = bomb_files(tmp_path)
    adapter = run_dir / "adapter"
    (adapter / "adapter_model.safetensors").unlink()
    for path, data in ((adapter / as_name, raw), (adapter / "pytorch_model.bin", zipped.read_bytes())):
        path.write_bytes(data)  # .bin beside it: never read either
    message = ("not a readable safetensors file" if as_name.endswith(".safetensors")
               else "no adapter_model.safetensors next to adapter_config.json")
    with pytest.raises(AdapterError, match=message):
        load_trained(run_dir)
    assert not marker.exists()


def test_a_pickle_bomb_as_model_weights_is_refused(tiny_model_dir, tmp_path):
    """A full model directory (a run's model/, a base) whose weights are a pickle: transformers
    reads .bin files with torch.load(weights_only=True), which refuses it."""
    marker, _, zipped = bomb_files(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").unlink()
    shutil.copyfile(zipped, model / "pytorch_model.bin")
    with pytest.raises(ModelError, match=f"{model}: cannot build a sequence classifier"):
        load_classifier(model, ["0", "1"])
    assert not marker.exists()


def test_a_model_directory_s_own_code_is_never_run(tiny_model_dir, tmp_path):
    marker = tmp_path / "PWNED"
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    config.update({"model_type": "evil", "auto_map": {
        "AutoConfig": "evil.EvilConfig",
        "AutoModelForSequenceClassification": "evil.EvilModel"}})
    (model / "config.json").write_text(json.dumps(config))
    (model / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    with pytest.raises(ModelError, match=f"{model}: cannot read the model config"):
        load_classifier(model, ["0", "1"])
    assert not marker.exists()


def test_overwrite_never_deletes_a_directory_that_is_not_a_run(tiny_model_dir, tiny_data,
                                                                tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    (home / "config.yaml").write_text("model: {name: x}\n")  # a config.yaml alone is not a run
    tree = tiny_config(tiny_model_dir, tiny_data, home, max_steps=2)
    for overwrite in (False, True):
        with pytest.raises(CheckpointError) as exc:
            train(validate(tree), overwrite=overwrite, log=quiet)
        assert str(exc.value) == (f"output_dir {home} is not empty and is not a tunelab run (no "
                                  "run.json, cv.json, study.db, meta.json, continual.json); "
                                  "tunelab never deletes it, even with --overwrite: set "
                                  "output_dir to a new or empty directory")
    assert (home / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in home.iterdir()) == ["config.yaml", "thesis.tex"]


def test_overwrite_replaces_a_run(run_dir, tiny_model_dir, tiny_data):
    (run_dir / "notes.txt").write_text("inside the old run")
    tree = tiny_config(tiny_model_dir, tiny_data, run_dir, max_steps=2)
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(validate(tree), log=quiet)
    train(validate(tree), overwrite=True, log=quiet)
    assert not (run_dir / "notes.txt").exists()
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2


def test_the_cli_refuses_overwrite_of_a_non_run_in_one_line(tiny_model_dir, tiny_data, tmp_path,
                                                             capsys):
    import yaml

    from tunelab.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (data / "keep.csv").write_text("a,b\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_model_dir, tiny_data, data, max_steps=2)))
    assert main(["train", str(cfg), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: output_dir {data} is not empty and is not a tunelab run")
    assert (data / "keep.csv").read_text() == "a,b\n"
