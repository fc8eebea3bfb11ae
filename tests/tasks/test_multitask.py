"""Multitask runs: task sampling (proportional, temperature, round robin), a shared tiny BERT
with one head per task that learns all three toy tasks, per-task sub-runs that serve the same
logits as the trained model, exact resume, and config errors."""

from __future__ import annotations

import json
import os
import random
import signal
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import synthetic_rows
from ner_fixtures import toy_ner_files
from tunelab.cli import main
from tunelab.config import validate
from tunelab.data.task_sampling import TaskSchedule, apportion, sampling_weights, task_order
from tunelab.errors import CheckpointError, ConfigError
from tunelab.runs.trained import load_trained
from tunelab.tasks.multitask import MultiTaskModel
from tunelab.recipes.setup import setup
from tunelab.train import checkpoint as ckpt
from tunelab.train import loop as loop_mod
from tunelab.recipes.run import train
from tunelab.train.signals import Interrupted


def quiet(_: str) -> None:
    pass


# ----------------------------------------------------------------------------- sampling


def test_temperature_weights_follow_the_formula():
    n = {"big": 900, "small": 100}
    w = sampling_weights(n, "temperature", 2.0)  # sqrt: 30 : 10
    assert w["big"] == pytest.approx(0.75) and w["small"] == pytest.approx(0.25)
    assert sampling_weights(n, "temperature", 1.0) == pytest.approx(
        sampling_weights(n, "proportional", 1.0))
    assert sampling_weights(n, "proportional", 1.0) == pytest.approx({"big": 0.9, "small": 0.1})
    hot = sampling_weights(n, "temperature", 1000.0)
    assert hot["big"] == pytest.approx(0.5, abs=1e-3)  # large T: nearly uniform
    assert sampling_weights(n, "round_robin", 1.0) == {"big": 0.5, "small": 0.5}


def test_apportion_is_exact_and_gives_every_task_a_batch():
    assert apportion({"a": 0.5, "b": 0.3, "c": 0.2}, 10) == {"a": 5, "b": 3, "c": 2}
    assert apportion({"a": 0.46, "b": 0.27, "c": 0.27}, 10) == {"a": 4, "b": 3, "c": 3}
    assert apportion({"a": 0.999, "b": 0.001}, 5) == {"a": 4, "b": 1}


def test_round_robin_takes_tasks_in_turn():
    assert task_order({"a": 3, "b": 3, "c": 2}, "round_robin", 0, 0) == \
        ["a", "b", "c", "a", "b", "c", "a", "b"]


def lengths(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(3, 30) for _ in range(n)]


def test_proportional_epoch_is_one_pass_over_every_task():
    sched = TaskSchedule({"a": lengths(64, 1), "b": lengths(20, 2)}, 8, 0, True, "proportional",
                         1.0)
    assert sched.quotas == {"a": 8, "b": 3}
    for epoch in range(3):
        plan = sched.plan(epoch)
        assert Counter(t for t, _ in plan) == {"a": 8, "b": 3}
        for task, n in (("a", 64), ("b", 20)):
            seen = sorted(i for t, idx in plan if t == task for i in idx)
            assert seen == list(range(n))  # each example exactly once
    assert [t for t, _ in sched.plan(0)] != [t for t, _ in sched.plan(1)]  # reshuffled


def test_temperature_and_round_robin_quotas_and_cycling():
    data = {"a": lengths(160, 1), "b": lengths(16, 2)}  # 20 and 2 batches of 8
    hot = TaskSchedule(data, 8, 0, True, "temperature", 2.0)
    # sqrt(160) : sqrt(16) = 12.65 : 4 -> 22 batches split 16.7 : 5.3
    assert hot.quotas == {"a": 17, "b": 5}
    rr = TaskSchedule(data, 8, 0, True, "round_robin", 1.0)
    assert rr.quotas == {"a": 11, "b": 11}
    plan = rr.plan(0)
    assert [t for t, _ in plan[:6]] == ["a", "b"] * 3
    # b has 2 batches but a quota of 11: it cycles through its own epochs, each a full pass
    b_batches = [idx for t, idx in plan if t == "b"]
    assert sorted(b_batches[0] + b_batches[1]) == list(range(16))
    assert b_batches[2] != b_batches[0] or b_batches[3] != b_batches[1]  # a new shuffle
    # a gives 11 of its 20 batches in epoch 0 and continues with the 12th in epoch 1
    a0 = [i for t, idx in plan if t == "a" for i in idx]
    a1 = [i for t, idx in rr.plan(1) if t == "a" for i in idx]
    assert not set(a0) & set(a1[:8 * 9])


def test_schedule_is_a_function_of_seed_and_epoch():
    data = {"a": lengths(50, 1), "b": lengths(30, 2), "c": lengths(9, 3)}
    walked = TaskSchedule(data, 4, 5, True, "temperature", 3.0)
    for e in range(4):
        walked.plan(e)
    fresh = TaskSchedule(data, 4, 5, True, "temperature", 3.0)
    assert fresh.plan(4) == walked.plan(4)
    assert TaskSchedule(data, 4, 6, True, "temperature", 3.0).plan(4) != fresh.plan(4)


# ----------------------------------------------------------------------------- toy tasks


TOPICS = {"sport": ["football", "tennis", "goal", "match"],
          "tech": ["software", "chip", "computer", "internet"],
          "money": ["bank", "market", "stocks", "price"]}


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    return path


def topic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = []
    for i in range(n):
        label = names[i % 3]
        words = rng.sample(["the", "news", "today", "about", "new", "report", "big"], 3)
        for topic_word in rng.sample(TOPICS[label], 2):  # two: one alone was learnt slowly
            words.insert(rng.randint(0, len(words)), topic_word)
        rows.append((" ".join(words), label))
    return rows


def toy_task_tree(root: Path) -> dict[str, dict]:
    """Sentiment (2 labels), topic (3 labels) and NER toy tasks, as a `tasks:` section."""
    ner = toy_ner_files(root)
    return {
        "sentiment": {"data": {"train": str(write_tsv(root / "s_train.tsv", synthetic_rows(96, 1))),
                               "dev": str(write_tsv(root / "s_dev.tsv", synthetic_rows(32, 2)))}},
        "topic": {"data": {"train": str(write_tsv(root / "t_train.tsv", topic_rows(96, 3))),
                           "dev": str(write_tsv(root / "t_dev.tsv", topic_rows(30, 4)))}},
        "ner": {"task": "token_classification",
                "data": {"train": str(ner["train"]), "dev": str(ner["dev"])}},
    }


@pytest.fixture
def toy_tasks(tmp_path: Path) -> dict[str, dict]:
    return toy_task_tree(tmp_path)


def mt_config(model_dir: Path, tasks: dict, out: Path, **train) -> dict:
    return {"task": "multitask", "model": {"name": str(model_dir), "max_length": 32},
            "tasks": tasks, "sampling": "proportional",
            "method": {"name": "full"},  # a random tiny base: LoRA alone adapts too little
            "train": {"batch_size": 8, "lr": 3e-3, "epochs": 8, "eval_every": 20,
                      "checkpoint_every": 20, "log_every": 5, "seed": 0, **train},
            "output_dir": str(out)}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """One multitask LoRA run over the three toy tasks (kept for several tests)."""
    root = tmp_path_factory.mktemp("mt")
    tasks = toy_task_tree(root)
    cfg = validate(mt_config(tiny_model_dir, tasks, root / "run"))
    lines: list[str] = []
    summary = train(cfg, log=lines.append)
    return cfg, summary, root / "run", lines


def test_every_task_head_trains_and_scores(trained):
    cfg, summary, run, lines = trained
    before, after = summary["initial_dev"], summary["final_dev"]
    assert summary["metric"] == "mean"
    assert after["sentiment/accuracy"] >= 0.9 and before["sentiment/accuracy"] <= 0.7
    assert after["topic/accuracy"] >= 0.9 and before["topic/accuracy"] <= 0.6
    assert after["ner/f1"] >= 0.8 and before["ner/f1"] <= 0.2
    assert after["mean"] == pytest.approx(
        (after["sentiment/accuracy"] + after["topic/accuracy"] + after["ner/f1"]) / 3)
    # one epoch = one pass over every task: 12 + 12 + 20 batches, 8 epochs. The topic task is
    # the fragile one on this random tiny encoder: with one topic word per example it stalled
    # at 0.67 (one class never predicted) for 2-3 of seeds 0-4 whatever the epochs (5-12);
    # with two, seeds 0, 1, 2 and 4 reach 1.0 and seed 3 stalls (2026-11-29)
    assert summary["steps"] == 8 * (12 + 12 + 20)
    assert any(line.startswith("sampling: proportional") and "ner 20 (of 20)" in line
               for line in lines)
    assert any(line.startswith("  ner: entity F1:") for line in lines)  # printed per task
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in records if r.get("split") == "dev"]
    assert all({"sentiment/accuracy", "topic/accuracy", "ner/f1"} <= set(r) for r in dev)


def test_saved_tasks_serve_the_trained_model(trained, capsys):
    cfg, summary, run, _ = trained
    # the trained model, rebuilt in memory from the best trainable weights the run kept
    from tunelab import methods

    s = setup(cfg, quiet)
    methods.apply(s.model, cfg.method)
    ckpt.load_trainable(s.model, run / "best" / ckpt.WEIGHTS)
    s.model.eval()
    assert isinstance(s.model, MultiTaskModel)
    assert s.model.models["ner"].bert.encoder is s.model.models["sentiment"].bert.encoder
    enc = s.tokenizer(["the acting was superb in paris", "john visited intel today"],
                      padding=True, return_tensors="pt")
    for name, kind in (("sentiment", "classification"), ("topic", "classification"),
                       ("ner", "token_classification")):
        served, _, info = load_trained(run / "tasks" / name)
        assert info["task"] == kind and json.loads((run / "tasks" / name / "run.json").read_text())
        with torch.no_grad():
            torch.testing.assert_close(served(**enc).logits, s.model.models[name](**enc).logits,
                                       rtol=0, atol=1e-5)
    # the commands serve a task by name
    assert main(["eval", str(run), "--task", "topic"]) == 0
    out = capsys.readouterr().out
    assert f"accuracy: {summary['final_dev']['topic/accuracy']:.4f}" in out
    assert main(["eval", str(run)]) == 0  # every task in turn
    out = capsys.readouterr().out
    assert "== task sentiment" in out and "== task ner" in out and "overall" in out
    assert main(["predict", str(run), "john smith visited paris", "--task", "ner"]) == 0
    assert 'PER  "john smith"' in capsys.readouterr().out
    assert main(["predict", str(run), "john"]) == 2
    assert "holds the tasks sentiment, topic, ner; pick one with --task" in capsys.readouterr().err
    assert main(["eval", str(run), "--task", "topc"]) == 2
    assert "no task 'topc' (did you mean 'topic'?)" in capsys.readouterr().err


LORA = {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}


def test_saved_lora_adapters_load_in_peft(tiny_model_dir, toy_tasks, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    tree = mt_config(tiny_model_dir, toy_tasks, tmp_path / "lora", max_steps=6, eval_at_start=False)
    tree["method"] = LORA
    train(validate(tree), log=quiet)
    for name, auto, labels in (("topic", AutoModelForSequenceClassification, 3),
                               ("ner", AutoModelForTokenClassification, 7)):
        served, tokenizer, _ = load_trained(tmp_path / "lora" / "tasks" / name)
        base = auto.from_pretrained(str(tiny_model_dir), num_labels=labels)
        adapter = tmp_path / "lora" / "tasks" / name / "adapter"
        peft_model = PeftModel.from_pretrained(base, str(adapter)).eval()
        enc = tokenizer(["the chip market in paris today"], return_tensors="pt")
        with torch.no_grad():
            torch.testing.assert_close(peft_model(**enc).logits, served(**enc).logits, rtol=0,
                                       atol=1e-5)
    # the token classifier has no pooler: its adapter holds no pooler weights, the others do
    from safetensors.torch import load_file

    def keys(name: str) -> list[str]:
        return list(load_file(str(tmp_path / "lora" / "tasks" / name / "adapter" /
                                  "adapter_model.safetensors")))

    assert not [k for k in keys("ner") if "pooler" in k]
    assert [k for k in keys("topic") if "pooler.dense.lora_A" in k]


@pytest.mark.parametrize("sampling,adapter", [("temperature", "shared"),
                                              ("round_robin", "per_task")])
def test_resume_reproduces_the_uninterrupted_run(tiny_model_dir, toy_tasks, tmp_path,
                                                 monkeypatch, sampling, adapter):
    tree = mt_config(tiny_model_dir, toy_tasks, tmp_path / "straight", max_steps=12, eval_every=4,
                     checkpoint_every=4, log_every=1)
    tree["sampling"], tree["method"], tree["adapter"] = sampling, LORA, adapter
    tree["model"]["dropout"] = 0.2
    straight = train(validate(tree), log=quiet)
    tree["output_dir"] = str(tmp_path / "interrupted")
    real_step = loop_mod.Trainer._step

    def step_then_signal(self, step, trainable):
        out = real_step(self, step, trainable)
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop_mod.Trainer, "_step", step_then_signal)
    with pytest.raises(Interrupted, match="SIGTERM at step 6/12"):
        train(validate(tree), log=quiet)
    monkeypatch.setattr(loop_mod.Trainer, "_step", real_step)
    resumed = train(validate(tree), resume=True, log=quiet)
    from safetensors.torch import load_file

    for name in toy_tasks:
        a = load_file(str(tmp_path / "straight" / "tasks" / name / "adapter" / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "interrupted" / "tasks" / name / "adapter" / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_dev"] == straight["final_dev"]


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("change,message", [
    (lambda t: t["tasks"].pop("topic") and t["tasks"].pop("ner"),
     "tasks: a multitask run needs at least two tasks (got 1)"),
    (lambda t: t["train"].update(metric="accuracy"),
     "train.metric: a multitask run selects by the mean of its tasks' metrics"),
    (lambda t: t["tasks"]["topic"]["data"].update(trian="x"),
     "unknown key 'tasks.topic.data.trian' (did you mean 'tasks.topic.data.train'?)"),
    (lambda t: t["tasks"].update({"a.b": t["tasks"]["topic"]}),
     "tasks.a.b: task names become directory names"),
    (lambda t: t.update(temperature=3.0),
     "temperature: only sampling: temperature uses it (sampling is proportional)"),
    (lambda t: t.update(sampling="random"), "sampling: input should be 'proportional', "
                                            "'temperature' or 'round_robin'"),
])
def test_config_errors(tiny_model_dir, toy_tasks, tmp_path, change, message):
    tree = mt_config(tiny_model_dir, toy_tasks, tmp_path / "x")
    change(tree)
    with pytest.raises(ConfigError) as exc:
        validate(tree)
    assert message in str(exc.value)


def test_task_flag_on_a_single_task_run_is_refused(tiny_model_dir, tiny_data, tmp_path, capsys):
    from conftest import tiny_config

    train(validate(tiny_config(tiny_model_dir, tiny_data, tmp_path / "one", max_steps=2)), log=quiet)
    assert main(["eval", str(tmp_path / "one"), "--task", "x"]) == 2
    assert "is a classification run with one task; drop --task" in capsys.readouterr().err
    with pytest.raises(CheckpointError):
        load_trained(tmp_path / "nothing")


def test_info_and_data_inspect_show_every_task(tiny_model_dir, toy_tasks, tmp_path, capsys):
    import yaml

    tree = mt_config(tiny_model_dir, toy_tasks, tmp_path / "x")
    tree["method"] = LORA
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "task head (trains fully): models.sentiment.classifier, models.topic.classifier, " \
           "models.ner.classifier" in out
    assert "models.sentiment.bert.encoder.layer.0.attention.self.query" in out
    assert ".ner.bert." not in out  # the shared encoder's layers are adapted once
    assert main(["data", "inspect", str(path), "-n", "1", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "=== task sentiment" in out and "=== task ner" in out and "entities (LOC: " in out


def test_each_batch_is_scored_as_its_own_task_scores_it(trained):
    """Loss per example of a multitask batch == that task's own normalised loss."""
    cfg = trained[0]
    s = setup(cfg, quiet)
    lengths = s.train.lengths()
    plan = s.task.plan_batches(lengths, 8, 0, 0, True)
    for name in ("sentiment", "ner"):
        index = next(b for b in plan if s.train.locate(b)[0] == name)
        _, local = s.train.locate(index)
        sub, part = s.task.tasks[name], s.train.parts[name]
        with torch.no_grad():
            multi = s.task.loss_sum(s.model, s.task.collate(s.train, index)) \
                / s.task.units(s.train, index)
            alone = sub.loss_sum(s.model.models[name], sub.collate(part, local)) \
                / sub.units(part, local)
        torch.testing.assert_close(multi, alone)


def test_per_task_adapters_share_frozen_weights_and_serve_each_task(tiny_model_dir, toy_tasks,
                                                                    tmp_path):
    from safetensors.torch import load_file

    tree = mt_config(tiny_model_dir, toy_tasks, tmp_path / "pt", max_steps=6, eval_at_start=False)
    tree["method"], tree["adapter"] = LORA, "per_task"
    cfg = validate(tree)
    s = setup(cfg, quiet)
    from tunelab import methods

    report = methods.apply(s.model, cfg.method)
    models = s.model.models
    assert models["ner"].bert.encoder is not models["sentiment"].bert.encoder
    q = "encoder.layer.0.attention.self.query"
    ner_q, sent_q = models["ner"].bert.get_submodule(q), models["sentiment"].bert.get_submodule(q)
    assert ner_q.weight is sent_q.weight  # one frozen base
    assert ner_q.lora_A.weight is not sent_q.lora_A.weight  # an adapter per task
    assert len(report.matched) == 13 + 13 + 12  # NER has no pooler

    train(cfg, log=quiet)
    adapters = {n: load_file(str(tmp_path / "pt" / "tasks" / n / "adapter" /
                                 "adapter_model.safetensors")) for n in toy_tasks}
    key = f"base_model.model.bert.{q}.lora_B.weight"
    assert not torch.equal(adapters["ner"][key], adapters["topic"][key])
    # each sub-run serves what the in-memory model computes with the best weights
    s = setup(cfg, quiet)
    methods.apply(s.model, cfg.method)
    ckpt.load_trainable(s.model, tmp_path / "pt" / "best" / ckpt.WEIGHTS)
    s.model.eval()
    enc = s.tokenizer(["john liked the chip market"], return_tensors="pt")
    for name in toy_tasks:
        served, _, _ = load_trained(tmp_path / "pt" / "tasks" / name)
        with torch.no_grad():
            torch.testing.assert_close(served(**enc).logits, s.model.models[name](**enc).logits,
                                       rtol=0, atol=1e-5)


def test_per_task_adapters_need_an_adapter_method(tiny_model_dir, toy_tasks, tmp_path):
    tree = mt_config(tiny_model_dir, toy_tasks, tmp_path / "x")
    tree["adapter"] = "per_task"
    with pytest.raises(ConfigError, match="adapter: per_task needs an adapter method that leaves "
                                          "the shared base weights frozen; full changes them"):
        validate(tree)
    tree["method"] = {**LORA, "init": "pissa"}
    with pytest.raises(ConfigError, match="lora with init: pissa changes them"):
        validate(tree)
