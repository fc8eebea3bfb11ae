"""Knowledge distillation (distill:) and smaller students (model.keep_layers): the loss, the
teacher's outputs, the student's base directory, and that distilling helps a student learn."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config, toy_sentiment_files

from tunelab.config.load import validate
from tunelab.errors import ConfigError, TunelabError
from tunelab.recipes.run import train
from tunelab.runs.layout import read_run_info
from tunelab.runs.trained import load_trained
from tunelab.tasks.distill import kd_sum


def test_kd_sum_is_the_softened_kl_times_t_squared() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    p_t = (t / 2).softmax(-1)
    by_hand = (p_t * (p_t.log() - (s / 2).log_softmax(-1))).sum() * 4
    assert torch.allclose(kd_sum(s, t, 2.0), by_hand, atol=1e-5)
    assert kd_sum(t, t, 3.0).abs() < 1e-5  # the student that matches its teacher pays nothing


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT fully fine-tuned on the clean toy task: it learns it."""
    root = tmp_path_factory.mktemp("teacher")
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(root), root / "run", max_steps=100,
                       lr=5e-3, eval_every=100, checkpoint_every=100, log_every=20)
    tree["method"] = {"name": "full"}
    summary = train(validate(tree), log=lambda _: None)
    assert summary["final_dev"]["accuracy"] >= 0.9, summary["final_dev"]
    return root / "run"


def _noisy(root: Path, share: float, seed: int) -> dict[str, Path]:
    """The toy files with `share` of the training labels flipped (the dev set stays clean)."""
    root.mkdir(parents=True, exist_ok=True)
    files = toy_sentiment_files(root)
    lines = files["train"].read_text().splitlines()
    rng = random.Random(seed)
    flip = set(rng.sample(range(1, len(lines)), int(share * (len(lines) - 1))))
    lines = [f"{ln.rsplit(chr(9), 1)[0]}\t{1 - int(ln.rsplit(chr(9), 1)[1])}" if i in flip else ln
             for i, ln in enumerate(lines)]
    files["train"].write_text("\n".join(lines) + "\n")
    return files


def _student(model: Path, files: dict[str, Path], out: Path, seed: int, **distill) -> dict:
    tree = tiny_config(model, files, out, max_steps=40, lr=3e-3, eval_every=40,
                       checkpoint_every=40, log_every=40, seed=seed, batch_size=16)
    tree["method"] = {"name": "full"}
    tree["model"]["keep_layers"] = 1
    tree["train"]["load_best_at_end"] = False  # the model the budget bought, not a dev pick
    if distill:
        tree["distill"] = distill
    return tree


def test_a_student_learns_more_from_the_teacher_than_from_noisy_labels(
        teacher: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same 1-layer student, same 40 steps, same data with 30% of its labels flipped: with the
    clean teacher's soft labels (alpha 0.8) it scores higher on clean dev than from the labels
    alone, on average over three seeds and by at least as much in each."""
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    gains = []
    for seed in range(3):
        files = _noisy(tmp_path / f"data{seed}", 0.3, seed)
        alone = train(validate(_student(tiny_model_dir, files, tmp_path / f"alone{seed}", seed)),
                      log=lambda _: None)["final_dev"]["accuracy"]
        taught = train(validate(_student(tiny_model_dir, files, tmp_path / f"kd{seed}", seed,
                                         teacher=str(teacher), alpha=0.8, temperature=2.0)),
                       log=lambda _: None)["final_dev"]["accuracy"]
        gains.append(taught - alone)
    print("accuracy gains from the teacher, per seed:", gains)
    assert min(gains) >= 0.0 and sum(gains) / 3 >= 0.05, gains


def test_cached_and_on_the_fly_teacher_give_the_same_loss_on_packed_batches(
        teacher: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packed rows reorder the examples: the cache is looked up by each one's id, so both
    ways of asking the teacher give one loss."""
    from tunelab.recipes.run import build_run

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    files = toy_sentiment_files(tmp_path)
    losses = []
    for mode in ("cache", "on_the_fly"):
        tree = _student(tiny_model_dir, files, tmp_path / mode, 0, teacher=str(teacher),
                        teacher_logits=mode, alpha=1.0)
        tree["data"]["packing"] = True
        torch.manual_seed(0)  # the same fresh head in both students
        s, _ = build_run(validate(tree), lambda _: None, None, torch.device("cpu"))
        assert s.task.packing
        batch = s.task.collate(s.train, list(range(0, 40, 3)))
        assert batch["example_ids"].tolist() != list(range(0, 40, 3))  # rows reordered them
        s.model.eval()
        losses.append(s.task.loss_sum(s.model, batch).item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert losses[0] > 0


def test_keep_layers_builds_a_plain_smaller_base_and_rebuilds_it_when_gone(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModel

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(tmp_path), tmp_path / "run",
                       max_steps=4)
    tree["model"]["keep_layers"] = [1]
    train(validate(tree), log=lambda _: None)
    info = read_run_info(tmp_path / "run")
    base = Path(info["base_model"])
    assert base.is_relative_to(tmp_path / "cache") and info["keep_layers"] == [1]
    record = json.loads((base / "tunelab_student.json").read_text())
    assert record["kept_layers"] == [1] and record["dropped_layers"] == [0]
    full, small = (AutoModel.from_pretrained(str(p)) for p in (tiny_model_dir, base))
    assert small.config.num_hidden_layers == 1
    layer = sum(p.numel() for p in full.encoder.layer[1].parameters())
    assert sum(p.numel() for p in full.parameters()) - sum(
        p.numel() for p in small.parameters()) == layer
    # the kept layer is the original's second layer, weights unchanged
    assert torch.equal(small.encoder.layer[0].attention.self.query.weight,
                       full.encoder.layer[1].attention.self.query.weight)
    model, _, _ = load_trained(tmp_path / "run")
    x = torch.tensor([[101, 2204, 3185, 102]])
    before = model(input_ids=x).logits
    shutil.rmtree(tmp_path / "cache")  # a cleared cache: the run rebuilds its base
    again, _, _ = load_trained(tmp_path / "run")
    assert torch.allclose(again(input_ids=x).logits, before, atol=1e-6)


@pytest.mark.parametrize("keep, message", [(5, "model.keep_layers: 5, but the model has 2 "
                                                "layers"),
                                               ([7], "names no layer or layers outside 0..1")])
def test_keep_layers_out_of_range_is_refused(tiny_model_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, keep, message) -> None:
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(tmp_path), tmp_path / "run")
    tree["model"]["keep_layers"] = keep
    with pytest.raises(TunelabError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.")):
        train(validate(tree), log=lambda _: None)


def test_bad_teachers_are_refused_by_name(teacher: Path, tiny_model_dir: Path,
                                          tmp_path: Path, ner_run: Path) -> None:
    files = toy_sentiment_files(tmp_path)
    cases = [(tmp_path, "is not a tunelab run directory"),
             (ner_run, "is a token_classification run; a classification student needs a "
                       "classification teacher")]
    for path, message in cases:
        tree = _student(tiny_model_dir, files, tmp_path / "s", 0, teacher=str(path))
        with pytest.raises(ConfigError, match=message):
            train(validate(tree), log=lambda _: None)
    other = files["train"].read_text().replace("\t1\n", "\tpositive\n")
    files["train"].write_text(other)
    files["dev"].write_text(files["dev"].read_text().replace("\t1\n", "\tpositive\n"))
    tree = _student(tiny_model_dir, files, tmp_path / "s", 0, teacher=str(teacher))
    with pytest.raises(ConfigError, match=r"predicts \['0', '1'\], the student's data has"):
        train(validate(tree), log=lambda _: None)


def test_a_cached_teacher_with_augmented_data_is_a_config_error(tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    tree = tiny_config(tiny_model_dir, toy_sentiment_files(tmp_path), tmp_path / "run")
    tree["data"]["augment"] = {"copies": 1}
    tree["distill"] = {"teacher": str(tmp_path)}
    with pytest.raises(ConfigError, match="distill.teacher_logits: on_the_fly"):
        validate(tree)


def test_cross_entropy_alone_when_alpha_is_zero() -> None:
    """alpha 0 is the labels-only baseline: the same loss as the plain task's."""
    from tunelab.tasks.distill import DistillTask, TeacherOutputs

    class Inner:
        @staticmethod
        def logits(model, batch):
            return model(batch["x"])

    lin = torch.nn.Linear(4, 3)
    batch = {"x": torch.randn(6, 4), "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
             "example_ids": torch.arange(6)}
    cache = [torch.randn(3) for _ in range(6)]
    task = DistillTask(Inner(), TeacherOutputs(Inner.logits, None, cache, torch.arange(3)),
                       2.0, 0.0)
    assert torch.allclose(task.loss_sum(lin, batch),
                          F.cross_entropy(lin(batch["x"]), batch["labels"], reduction="sum"))


def test_a_ner_student_reads_the_teachers_tags_per_sub_token(
        ner_run: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token classification: cached and on-the-fly teacher outputs agree on the trained
    sub-tokens (the cache holds each sentence's own length of rows)."""
    from ner_fixtures import ner_config, toy_ner_files

    from tunelab.recipes.run import build_run

    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    files = toy_ner_files(tmp_path)
    losses = {}
    for name in ("cache", "on_the_fly"):
        tree = ner_config(tiny_model_dir, files, tmp_path / name)
        tree["distill"] = {"teacher": str(ner_run), "alpha": 1.0, "teacher_logits": name}
        torch.manual_seed(0)  # the same fresh head in every student
        s, _ = build_run(validate(tree), lambda _: None, None, torch.device("cpu"))
        s.model.eval()
        batch = s.task.collate(s.train, [5, 0, 9, 3])
        losses[name] = s.task.loss_sum(s.model, batch).item()
        plain = s.task.inner.loss_sum(s.model, batch).item()
    assert losses["cache"] == pytest.approx(losses["on_the_fly"], rel=1e-4)
    assert losses["cache"] > 0.1 and losses["cache"] != pytest.approx(plain, rel=1e-2)
