"""A continual run's files, adapter-per-stage's untouched earlier stages, and LwF and EWC's
parts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from continual_toy import toy_continual

from tunelab.continual.config import validate_continual
from tunelab.continual.run import continual
from tunelab.continual.stages import build_stages
from tunelab.continual.strategies.ewc import EwcPenalty, diagonal_fisher
from tunelab.continual.strategies.replay import buffer_ids
from tunelab.errors import CheckpointError

LORA = {"name": "lora", "r": 4, "alpha": 8, "targets": ["query", "value"]}


def run(tiny_model_dir: Path, tmp_path: Path, strategy: dict, steps: int = 20, **kw) -> dict:
    tree = toy_continual(tiny_model_dir, tmp_path / "data", tmp_path / "out", strategy,
                         shared_head=False, steps=steps, lr=1e-2, **LORA)
    tree["train"].update(kw)
    return continual(validate_continual(tree), log=lambda _: None)


def test_adapter_per_stage_leaves_earlier_scores_exactly_unchanged(tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    s = run(tiny_model_dir, tmp_path, {"name": "adapter-per-stage", "orthogonal": 1.0})
    out = Path(s["report"]).parent
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["after"] for r in records] == [None, 0, 1]
    # every score of stage 1 (loss included), bit for bit, before and after stage 2 trained
    assert records[2]["scores"]["sentiment"] == records[1]["scores"]["sentiment"]
    assert s["matrix"][1][0] == s["matrix"][0][0] and s["bwt"] == 0.0
    # both stages trained: each one's dev loss moved off the untrained one
    assert records[1]["scores"]["sentiment"]["loss"] != records[0]["scores"]["sentiment"]["loss"]
    assert records[2]["scores"]["colours"]["loss"] != records[1]["scores"]["colours"]["loss"]
    # the O-LoRA penalty ran in stage 2 (and only there)
    logs = [json.loads(x) for x in (out / "stages/colours/metrics.jsonl").read_text().splitlines()]
    assert any(r.get("olora_penalty", 0) > 0 for r in logs)
    first = (out / "stages/sentiment/metrics.jsonl").read_text()
    assert "olora_penalty" not in first


def test_a_shared_adapter_does_change_earlier_scores(tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    """The contrast that makes the test above mean something: the same stages with one shared
    LoRA (naive) move stage 1's dev loss when stage 2 trains."""
    run(tiny_model_dir, tmp_path, {"name": "naive"})
    records = [json.loads(x) for x in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert records[2]["scores"]["sentiment"]["loss"] != records[1]["scores"]["sentiment"]["loss"]


def test_run_writes_matrix_plot_report_and_loadable_stage_runs(tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    s = run(tiny_model_dir, tmp_path, {"name": "lwf", "alpha": 1.0}, steps=8)
    out = Path(s["report"]).parent
    assert (out / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    assert "backward transfer, BWT" in report and f"{s['bwt']:+.4f}" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["matrix"] == s["matrix"] and len(summary["stage_seconds"]) == 2
    assert summary["train_seconds"] == pytest.approx(sum(summary["stage_seconds"]))
    for name in ("sentiment", "colours"):
        info = json.loads((out / "stages" / name / "run.json").read_text())
        assert info["labels"] == ["0", "1"] and info["artifact"] == "adapter"
        assert (out / "stages" / name / "adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(CheckpointError, match="--overwrite"):
        run(tiny_model_dir, tmp_path, {"name": "naive"}, steps=2)


def test_replay_buffer_is_seeded_and_per_stage() -> None:
    assert buffer_ids(100, 10, 0, 1) == buffer_ids(100, 10, 0, 1)
    assert buffer_ids(100, 10, 0, 1) != buffer_ids(100, 10, 0, 2)
    assert len(buffer_ids(100, 10, 0, 1)) == 10 and buffer_ids(5, 10, 0, 1) == list(range(5))


def test_ewc_fisher_and_penalty(tiny_model_dir: Path, tmp_path: Path) -> None:
    tree = toy_continual(tiny_model_dir, tmp_path / "data", tmp_path / "out", {"name": "ewc"},
                         **LORA)
    stages = build_stages(validate_continual(tree), lambda _: None, False)
    params = {n: p for n, p in stages.model.named_parameters() if p.requires_grad}
    fisher = diagonal_fisher(stages, 0, params, 8, 0, torch.device("cpu"))
    assert set(fisher) == set(params)
    assert all((f >= 0).all() for f in fisher.values()) and sum(f.sum() for f in fisher.values()) > 0
    anchor = {n: p.detach().clone() for n, p in params.items()}
    hook = EwcPenalty(params, fisher, anchor, strength=2.0)
    assert hook.extra_loss().item() == 0.0  # no drift, no penalty
    name = next(n for n in params if "classifier" in n)
    with torch.no_grad():
        params[name].add_(0.5)
    expected = 0.5 * 2.0 * float((fisher[name] * 0.25).sum())
    assert hook.extra_loss().item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("strategy", ["lwf", "replay", "ewc"])
def test_a_token_classification_stage_mixes_with_a_classification_one(
        strategy: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Sentiment, then toy NER, then sentiment-style colours: replay and LwF run each earlier
    head (a sentence head, a token head) on the other kind of batch; the matrix is scored by
    each stage's own metric (entity F1 for NER)."""
    from ner_fixtures import toy_ner_files

    (tmp_path / "ner").mkdir()
    ner = toy_ner_files(tmp_path / "ner")
    tree = toy_continual(tiny_model_dir, tmp_path / "data", tmp_path / "out",
                         {"name": strategy}, shared_head=False, steps=3, **LORA)
    tree["stages"].insert(1, {"name": "ner", "task": "token_classification",
                              "data": {"train": str(ner["train"]), "dev": str(ner["dev"])}})
    s = continual(validate_continual(tree), log=lambda _: None)
    assert s["metrics"] == ["accuracy", "f1", "accuracy"]
    assert len(s["matrix"]) == 3 and all(len(row) == 3 for row in s["matrix"])
    assert all(0.0 <= v <= 1.0 for row in s["matrix"] for v in row)
    logs = (tmp_path / "out/stages/colours/metrics.jsonl").read_text()
    assert '"split": "dev"' in logs  # the last stage trained to its end and was scored
