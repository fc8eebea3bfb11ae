"""The training loop: loss normalisation, schedules, exact resume, SIGTERM, early stopping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, sigterm_after_step, tiny_config
from tunelab.config import validate
from tunelab.errors import CheckpointError
from tunelab.train import loop as loop_mod
from tunelab.train.optim import lr_factor
from tunelab.recipes.run import train
from tunelab.train.signals import Interrupted


def quiet(_: str) -> None:
    pass


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_learning_happens_on_the_toy_task(tiny_model_dir, tiny_data, tmp_path, precision):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "run", max_steps=128, eval_every=64,
                       lr=3e-3, precision=precision)
    tree["method"] = {"name": "full"}  # a random tiny base: LoRA alone has too little to adapt
    cfg = validate(tree)
    summary = train(cfg, log=quiet)
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in history if "train_loss" in r]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert summary["final_dev"]["accuracy"] >= 0.9
    assert summary["precision"] == precision
    # the steps' CPU time is recorded beside their wall time: positive, and within what the
    # process's threads could spend in that wall time
    threads = torch.get_num_threads()
    assert 0 < summary["train_cpu_seconds"] <= 1.2 * threads * summary["train_seconds"] + 0.5
    for name in ("config.yaml", "run.json", "summary.json", "plot.png", "model/config.json"):
        assert (tmp_path / "run" / name).is_file(), name


def test_accumulation_normalises_by_examples_in_the_step(tiny_model_dir, tiny_data, tmp_path):
    """One step over [8] examples equals one step over micro-batches [3] + [5]."""

    def one_step(parts: list[list[int]]) -> dict[str, torch.Tensor]:
        cfg = validate(tiny_config(tiny_model_dir, tiny_data, tmp_path / str(len(parts)),
                                   optimizer="sgd", momentum=0.0, max_grad_norm=None, lr=0.5,
                                   warmup_ratio=0.0, schedule="constant"))
        from tunelab.data import load_splits
        from tunelab.methods import apply
        from tunelab.models import load_classifier, load_tokenizer
        from tunelab.tasks.classification import ClassificationTask

        splits = load_splits(cfg.data)
        torch.manual_seed(0)
        model = load_classifier(tiny_model_dir, splits.labels, dropout=0.0)
        apply(model, cfg.method)
        tok = load_tokenizer(tiny_model_dir)
        task = ClassificationTask(splits.labels, 32, tok.pad_token_id)
        trainer = loop_mod.Trainer(model, task, task.encode(tok, splits.train),
                                   task.encode(tok, splits.dev), cfg.train, tmp_path, torch.device("cpu"))
        assert model.config._attn_implementation == "tunelab_sdpa"  # a CPU run switches to it
        trainer.micro_batches = lambda step: parts
        trainer._step(0, [p for p in model.parameters() if p.requires_grad])
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    whole = one_step([list(range(8))])
    split = one_step([[0, 1, 2], [3, 4, 5, 6, 7]])
    for name in whole:
        assert torch.allclose(whole[name], split[name], atol=1e-6), name


def test_schedules_with_warmup():
    assert [lr_factor(s, 10, 2, "constant") for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 2, "linear") for s in (2, 6, 10)] == [1.0, 0.5, 0.0]
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0)


def test_resume_reproduces_the_uninterrupted_run(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "straight")
    tree["model"]["dropout"] = 0.2  # exercises the saved RNG state
    straight = train(validate(tree), log=quiet)

    tree["output_dir"] = str(tmp_path / "interrupted")
    restore = sigterm_after_step(monkeypatch, 5)  # the 6th step: between checkpoints (every 4)
    with pytest.raises(Interrupted, match=r"SIGTERM at step 6/12: checkpoint saved to .*step-0000006"):
        train(validate(tree), log=quiet)
    restore()
    resumed = train(validate(tree), resume=True, log=quiet)

    a, b = adapter_tensors(tmp_path / "straight"), adapter_tensors(tmp_path / "interrupted")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["best"] == straight["best"]
    steps = [json.loads(x)["step"] for x in (tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines()
             if "train_loss" in x]
    assert steps == list(range(1, 13))  # no step logged twice after the resume


def test_resume_refuses_a_different_config(tiny_model_dir, tiny_data, tmp_path):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "r", max_steps=4)
    train(validate(tree), log=quiet)
    tree["method"]["r"] = 8
    with pytest.raises(CheckpointError) as exc:
        train(validate(tree), resume=True, log=quiet)
    assert str(exc.value) == (f"--resume: the config differs from the run in {tmp_path / 'r'}: "
                              "method.r: 4 -> 8; resume with the same config or train into a new "
                              "output_dir")
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(validate(tree), log=quiet)


def test_early_stopping_stops_and_keeps_the_best(tiny_model_dir, tiny_data, tmp_path):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "es", max_steps=40, eval_every=2,
                       metric="loss", early_stopping={"patience": 1, "min_delta": 10.0})
    summary = train(validate(tree), log=quiet)
    # step 0 (before training) is the first evaluation, step 2 the first without improvement
    assert summary["stopped_early"] and summary["steps"] == 2
    assert summary["best"]["step"] == 0 and summary["restored_best"]
    resumed = train(validate(tree), resume=True, log=quiet)  # an early-stopped run stays stopped
    assert resumed["steps"] == 2 and resumed["stopped_early"]


def test_sigterm_saves_a_checkpoint_that_resumes(tiny_model_dir, tiny_data, tmp_path):
    import yaml

    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "sig", max_steps=400,
                       checkpoint_every=1000, eval_every=1000)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "tunelab", "train", str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved to" in err and "continue with --resume" in err
    ckpts = sorted((tmp_path / "sig" / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "state.json").is_file()
    step = json.loads((ckpts[0] / "state.json").read_text())["step"]
    assert 3 <= step < 400
    tree["train"]["max_steps"] = 400
    resumed = subprocess.run([sys.executable, "-m", "tunelab", "train", str(path), "--resume",
                              "train.max_steps=400"], env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpts[0]} (step {step}/400)" in resumed.stdout
    assert (tmp_path / "sig" / "adapter" / "adapter_model.safetensors").is_file()


def test_unavailable_device_fails_before_anything_is_written(tiny_model_dir, tiny_data, tmp_path,
                                                             monkeypatch):
    from tunelab.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "dev", device="cuda")
    with pytest.raises(ConfigError, match="train.device: cuda was asked for but no GPU is visible"):
        train(validate(tree), log=quiet)
    assert not (tmp_path / "dev").exists()


def test_resume_before_the_first_checkpoint_starts_over_cleanly(tiny_model_dir, tiny_data,
                                                                tmp_path, monkeypatch):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "early", checkpoint_every=100)
    restore = sigterm_after_step(monkeypatch, 2)
    with pytest.raises(Interrupted):
        train(validate(tree), log=quiet)
    restore()
    ckpts = sorted((tmp_path / "early" / "checkpoints").glob("step-*"))
    assert [c.name for c in ckpts] == ["step-0000003"]  # the signal's checkpoint
    import shutil

    shutil.rmtree(ckpts[0])  # as if the process had been killed before writing one
    train(validate(tree), resume=True, log=quiet)
    records = [json.loads(x) for x in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "train_loss" in r] == list(range(1, 13))


@pytest.mark.parametrize("option", ["gradient_checkpointing", "compile"])
def test_memory_and_speed_options_train_the_same_weights(tiny_model_dir, tiny_data, tmp_path, option):
    results, logs = {}, []
    for name, on in (("plain", False), (option, True)):
        tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / name, max_steps=4,
                           eval_every=None, **{option: on})
        tree["model"]["dropout"] = 0.0
        train(validate(tree), log=logs.append)
        results[name] = adapter_tensors(tmp_path / name)
    shown = {"gradient_checkpointing": "gradient checkpointing", "compile": "torch.compile"}[option]
    assert [line for line in logs if line.startswith("training ") and shown in line]
    for k, v in results["plain"].items():
        assert torch.allclose(v, results[option][k], atol=1e-5), k
