"""Cross-validation: fold sets (disjoint, covering, stratified, grouped by document) and
`tunelab cv` runs whose summary is the per-fold numbers."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from ner_fixtures import ner_config, toy_ner_files, toy_sentences, write_conll
from tunelab.cli import main
from tunelab.config import validate
from tunelab.data.conll import read_conll
from tunelab.errors import ConfigError, DataError
from tunelab.eval.cv import cross_validate, make_folds
from tunelab.eval.folds import grouped_folds, stratified_folds


def quiet(_: str) -> None:
    pass


def assert_partition(held_out: list[list[int]], n: int) -> None:
    seen = [i for part in held_out for i in part]
    assert sorted(seen) == list(range(n))  # every example is held out exactly once
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("n, folds", [(100, 5), (103, 4), (37, 3)])
def test_stratified_folds_are_disjoint_cover_the_data_and_keep_label_shares(n, folds):
    labels = ["pos" if i % 10 < 7 else "neg" for i in range(n)]  # 70 / 30
    drawn = stratified_folds(labels, folds, seed=0)
    assert_partition(drawn.held_out, n)
    total = Counter(labels)
    for k, part in enumerate(drawn.held_out):
        counts = Counter(labels[i] for i in part)
        for label in total:  # each fold holds 1/K of every label, to within one example
            assert abs(counts[label] - total[label] / folds) < 1, (k, label, counts)
        assert sorted(drawn.train_part(k) + part) == list(range(n))
    assert drawn.held_out != stratified_folds(labels, folds, seed=1).held_out  # seeded shuffle


def test_grouped_folds_keep_documents_whole(tmp_path):
    path = write_conll(tmp_path / "t.txt", toy_sentences(60, 0), docs_every=7)
    sentences = read_conll(path, 0, -1, "iob2")
    docs = [s.doc for s in sentences]
    assert docs[:8] == [1] * 7 + [2]  # -DOCSTART- before every 7 sentences
    drawn = grouped_folds(docs, 4, seed=0, what="sentences")
    assert drawn.kind == "grouped by document (9 documents)"
    assert_partition(drawn.held_out, len(docs))
    fold_of = {i: k for k, part in enumerate(drawn.held_out) for i in part}
    for doc in set(docs):
        assert len({fold_of[i] for i, d in enumerate(docs) if d == doc}) == 1, doc


def test_without_document_marks_folds_split_sentences():
    drawn = grouped_folds([0] * 20, 4, seed=0, what="sentences")
    assert drawn.kind.startswith("sentences shuffled")
    assert_partition(drawn.held_out, 20)
    assert [len(p) for p in drawn.held_out] == [5, 5, 5, 5]


def test_fold_errors_name_the_problem():
    with pytest.raises(ConfigError, match="--folds 1: cross-validation needs at least 2"):
        stratified_folds(["a", "b"] * 5, 1, 0)
    with pytest.raises(DataError, match="label 'b' has 2 example"):
        stratified_folds(["a"] * 10 + ["b"] * 2, 3, 0)
    with pytest.raises(DataError, match="only 3 documents.*lower --folds"):
        grouped_folds([1, 1, 2, 2, 3, 3], 4, 0, "sentences")


def test_ner_folds_come_grouped_by_document(tiny_model_dir, tmp_path):
    cfg = validate(ner_config(tiny_model_dir, toy_ner_files(tmp_path), tmp_path / "cv"))
    splits, drawn = make_folds(cfg, 4)
    assert drawn.kind == "grouped by document (16 documents)"  # 160 sentences, 10 per document
    assert_partition(drawn.held_out, len(splits.train))


def test_cv_summary_matches_the_per_fold_runs(tiny_model_dir, tiny_data, tmp_path):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "cv", max_steps=6, eval_every=None,
                       checkpoint_every=None)
    lines: list[str] = []
    report = cross_validate(validate(tree), 3, log=lines.append)
    out = tmp_path / "cv"
    assert json.loads((out / "cv.json").read_text()) == report
    assert report["split"] == "stratified by label" and report["metric"] == "accuracy"
    held = []
    for k, fold in enumerate(report["per_fold"]):
        run = out / f"fold-{k}"
        summary = json.loads((run / "summary.json").read_text())
        assert fold["scores"] == pytest.approx({m: summary["final_dev"][m]
                                                for m in ("accuracy", "macro_f1", "loss")})
        assert summary["dev_examples"] == fold["held_out"] == 32  # 96 examples, 3 folds
        assert fold["train"] == 64
        held += json.loads((run / "fold.json").read_text())["held_out"]
        assert (run / "adapter" / "adapter_model.safetensors").is_file()  # --keep adapters
        assert not (run / "checkpoints").exists() and not (run / "best").exists()
    lines_of_train = {f"{tiny_data['train']}:{i}" for i in range(2, 98)}  # after the header
    assert sorted(held) == sorted(lines_of_train)
    for metric in ("accuracy", "macro_f1", "loss"):
        values = [f["scores"][metric] for f in report["per_fold"]]
        assert report["mean"][metric] == pytest.approx(statistics.fmean(values))
        assert report["std"][metric] == pytest.approx(statistics.stdev(values))
    mean, std = report["mean"]["accuracy"], report["std"]["accuracy"]
    assert f"accuracy: {mean:.4f} +- {std:.4f} (mean +- sample std over 3 folds)" in lines
    assert "[fold 2] " in (out / "log.txt").read_text()  # each fold's run log


def test_cv_command_keep_none_and_refuses_to_overwrite(tiny_model_dir, tiny_data, tmp_path, capsys):
    tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / "cv", max_steps=3, eval_every=None,
                       checkpoint_every=None)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["cv", str(path), "--folds", "2", "--keep", "none", "train.lr=1e-3"]) == 0
    out = capsys.readouterr().out
    assert "mean +- sample std over 2 folds" in out
    for k in (0, 1):
        run = tmp_path / "cv" / f"fold-{k}"
        assert (run / "summary.json").is_file() and not (run / "adapter").exists()
        assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 1e-3
    assert main(["cv", str(path), "--folds", "2"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["cv", str(path), "--folds", "50", "--overwrite"]) == 2
    assert "label '0' has 48 example(s), fewer than the 50 folds" in capsys.readouterr().err
    assert (tmp_path / "cv" / "cv.json").is_file()  # checked before anything was replaced


def test_cv_refuses_tasks_it_cannot_fold(tmp_path):
    cfg = validate({"task": "causal_lm", "data": {"path": str(tmp_path / "x.jsonl")},
                    "output_dir": str(tmp_path / "o")})
    with pytest.raises(ConfigError, match="cross-validation is for classification and "
                                          "token_classification"):
        cross_validate(cfg, 3, log=quiet)
    assert not Path(tmp_path / "o").exists()


def test_ner_cv_run_scores_entity_f1_per_fold(tiny_model_dir, tmp_path):
    files = toy_ner_files(tmp_path)
    tree = ner_config(tiny_model_dir, files, tmp_path / "cv", max_steps=3, eval_every=None,
                      checkpoint_every=None)
    report = cross_validate(validate(tree), 2, keep="none", log=quiet)
    assert report["metric"] == "f1" and report["split"] == "grouped by document (16 documents)"
    held = [json.loads((tmp_path / "cv" / f"fold-{k}" / "fold.json").read_text())["held_out"]
            for k in (0, 1)]
    starts = {s.where: s.doc for s in read_conll(files["train"], 0, -1, "iob2")}
    assert sorted(held[0] + held[1]) == sorted(starts)  # every sentence held out once
    assert not {starts[w] for w in held[0]} & {starts[w] for w in held[1]}  # whole documents
    for name in ("f1", "precision", "recall", "token_accuracy", "loss"):
        values = [f["scores"][name] for f in report["per_fold"]]
        assert report["mean"][name] == pytest.approx(statistics.fmean(values))
