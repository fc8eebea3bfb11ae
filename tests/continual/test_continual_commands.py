"""The command functions: `tunelab continual CONFIG` and `train --continue-from RUN`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config, toy_sentiment_files
from continual_toy import toy_continual, write_stage

from tunelab.commands.continual import continual, continue_from
from tunelab.config import validate
from tunelab.errors import CheckpointError, ConfigError
from tunelab.recipes.run import train

LORA = {"name": "lora", "r": 4, "alpha": 8, "targets": ["query", "value"]}


def test_continual_command_reads_yaml_and_overrides(tiny_model_dir: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    tree = toy_continual(tiny_model_dir, tmp_path / "data", tmp_path / "out", "replay",
                         shared_head=False, steps=2, **LORA)
    path = tmp_path / "continual.yaml"
    path.write_text(yaml.safe_dump(tree))
    summary = continual(str(path), ["strategy.per_stage=8", "train.max_steps=3"])
    assert "accuracy matrix and transfer" in capsys.readouterr().out
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["strategy"]["per_stage"] == 8 and saved["train"]["max_steps"] == 3
    steps = [json.loads(x)["step"] for x in
             (tmp_path / "out/stages/colours/metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 3 and len(summary["matrix"]) == 2


@pytest.fixture
def base_run(tiny_model_dir: Path, tmp_path: Path) -> Path:
    (tmp_path / "base-data").mkdir()
    data = toy_sentiment_files(tmp_path / "base-data")
    cfg = validate(tiny_config(tiny_model_dir, data, tmp_path / "base"))
    train(cfg, log=lambda _: None)
    return tmp_path / "base"


def test_continue_from_scores_the_run_before_and_after_the_new_data(
        base_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    new = write_stage(tmp_path / "new-data", "colours", colours=True)
    tree = tiny_config(tiny_model_dir, {"train": Path(new["train"]), "dev": Path(new["dev"])},
                       tmp_path / "continued", max_steps=4)
    summary = continue_from(validate(tree), base_run, "ewc", log=lambda _: None)
    base = json.loads((base_run / "summary.json").read_text())
    # stage 0 is the run itself, not retrained: its score is the run's own final dev score
    assert summary["matrix"][0][0] == pytest.approx(base["final_dev"]["accuracy"], abs=1e-9)
    assert summary["stage_seconds"][0] == 0.0 and summary["stage_seconds"][1] > 0
    assert summary["bwt"] == summary["matrix"][1][0] - summary["matrix"][0][0]
    info = json.loads((tmp_path / "continued/stages/new/run.json").read_text())
    assert info["labels"] == ["0", "1"]


def test_continue_from_refuses_what_it_cannot_continue(base_run: Path, tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    data = toy_sentiment_files(tmp_path / "d")
    cfg = validate(tiny_config(tiny_model_dir, data, tmp_path / "c"))
    with pytest.raises(ConfigError, match="--resume: a --continue-from run starts over"):
        continue_from(cfg, base_run, resume=True)
    with pytest.raises(CheckpointError, match="--continue-from: .* holds no run"):
        continue_from(cfg, tmp_path / "nowhere")
    other = tiny_config(tiny_model_dir, data, tmp_path / "c")
    other["method"] = {"name": "ia3"}
    with pytest.raises(ConfigError, match="method.name: .* trained lora"):
        continue_from(validate(other), base_run)
