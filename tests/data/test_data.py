import json
from collections import Counter
from pathlib import Path

import pytest

from tunelab.config import DataConfig
from tunelab.data import load_splits, plan_batches
from tunelab.data.readers import Columns, read_examples
from tunelab.data.splits import stratified_split
from tunelab.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_csv_jsonl_read_the_same_examples(tmp_path: Path):
    cols = Columns(text="text", label="label")
    tsv = write(tmp_path / "a.tsv", 'text\tlabel\nit\'s "fine"\tpos\nbad\tneg\n')
    csv = write(tmp_path / "a.csv", 'text,label\n"it\'s ""fine""",pos\nbad,neg\n')
    jsonl = write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in [
        {"text": "it's \"fine\"", "label": "pos"}, {"text": "bad", "label": "neg"}]) + "\n")
    got = [[(e.text, e.label) for e in read_examples(p, "auto", True, cols)] for p in (tsv, csv, jsonl)]
    assert got[0] == got[1] == got[2] == [("it's \"fine\"", "pos"), ("bad", "neg")]


def test_headerless_file_uses_column_indices(tmp_path: Path):
    path = write(tmp_path / "n.tsv", "first text\tWorld\nsecond\tSports\n")
    rows = read_examples(path, "tsv", False, Columns(text=0, label=1))
    assert [(e.text, e.label, e.where) for e in rows][1] == ("second", "Sports", f"{path}:2")


def test_bad_row_names_file_and_line(tmp_path: Path):
    path = write(tmp_path / "t.tsv", "sentence\tlabel\nok\t1\nno label here\n")
    with pytest.raises(DataError) as exc:
        read_examples(path, "tsv", True, Columns(text="sentence", label="label"))
    assert str(exc.value) == f"{path}:3: expected 2 tab-separated fields, found 1"


def test_empty_label_and_bad_json_and_missing_column(tmp_path: Path):
    cols = Columns(text="sentence", label="label")
    with pytest.raises(DataError, match=r"t.tsv:2: empty label in column 'label'"):
        read_examples(write(tmp_path / "t.tsv", "sentence\tlabel\nok\t \n"), "tsv", True, cols)
    with pytest.raises(DataError, match=r"b.jsonl:2: not valid JSON"):
        read_examples(write(tmp_path / "b.jsonl", '{"sentence": "a", "label": 1}\n{oops\n'),
                      "auto", True, cols)
    with pytest.raises(DataError) as exc:
        read_examples(write(tmp_path / "c.tsv", "text\tlabel\nok\t1\n"), "tsv", True, cols)
    assert str(exc.value) == (f"{tmp_path / 'c.tsv'}:1: no column 'sentence' in the header "
                              "(columns: text, label); set data.columns")


def test_unknown_dev_label_is_an_error(tmp_path: Path):
    train = write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tneg\n")
    dev = write(tmp_path / "dev.tsv", "text\tlabel\nc\tneutral\n")
    with pytest.raises(DataError) as exc:
        load_splits(DataConfig(train=str(train), dev=str(dev)))
    assert str(exc.value) == (f"{dev}:2: label 'neutral' does not occur in the training data "
                              "(known labels: neg, pos)")


def test_missing_file(tmp_path: Path):
    with pytest.raises(DataError, match="nope.tsv: file not found"):
        load_splits(DataConfig(train=str(tmp_path / "nope.tsv")))


def test_stratified_split_is_seeded_and_keeps_label_shares(tmp_path: Path):
    lines = ["text\tlabel"] + [f"t{i}\t{'a' if i % 4 else 'b'}" for i in range(400)]
    path = write(tmp_path / "s.tsv", "\n".join(lines) + "\n")
    cfg = DataConfig(train=str(path), dev_fraction=0.25, split_seed=3)
    one, two = load_splits(cfg), load_splits(cfg)
    assert [e.text for e in one.dev] == [e.text for e in two.dev]
    assert Counter(e.label for e in one.dev) == {"a": 75, "b": 25}
    assert len(one.train) == 300 and not {e.text for e in one.train} & {e.text for e in one.dev}
    other = load_splits(DataConfig(train=str(path), dev_fraction=0.25, split_seed=4))
    assert [e.text for e in other.dev] != [e.text for e in one.dev]
    with pytest.raises(DataError, match="cannot split a dev set"):
        stratified_split([e for e in one.train if e.label == "a"][:3]
                         + [e for e in one.train if e.label == "b"][:1], 0.5, 0)


def test_per_class_takes_a_seeded_k_of_every_label(tmp_path: Path):
    lines = ["text\tlabel"] + [f"t{i}\t{'a' if i % 4 else 'b'}" for i in range(200)]
    path = write(tmp_path / "s.tsv", "\n".join(lines) + "\n")
    dev = write(tmp_path / "d.tsv", "text\tlabel\nx\ta\ny\tb\n")
    one = load_splits(DataConfig(train=str(path), dev=str(dev), per_class=16, split_seed=1))
    assert Counter(e.label for e in one.train) == {"a": 16, "b": 16}
    assert [int(e.text[1:]) for e in one.train] == sorted(int(e.text[1:]) for e in one.train)
    assert one.notes[-1] == "few-shot: a seeded 16 training examples per label (32 in all)"
    again = load_splits(DataConfig(train=str(path), dev=str(dev), per_class=16, split_seed=1))
    other = load_splits(DataConfig(train=str(path), dev=str(dev), per_class=16, split_seed=2))
    assert [e.text for e in again.train] == [e.text for e in one.train]
    assert [e.text for e in other.train] != [e.text for e in one.train]
    with pytest.raises(DataError) as exc:
        load_splits(DataConfig(train=str(path), dev=str(dev), per_class=60))
    assert str(exc.value) == ("data.per_class 60: the training data has fewer examples of 'b' "
                              "(50); lower data.per_class")


def test_catalog_name_resolves_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "sst2").mkdir()
    write(tmp_path / "sst2" / "train.tsv", "sentence\tlabel\ngood \t1\nbad \t0\nok \t1\nmeh \t0\n")
    write(tmp_path / "sst2" / "dev.tsv", "sentence\tlabel\nfine \t1\n")
    write(tmp_path / "sst2" / "test_labeled.tsv", "sentence\tlabel\nawful \t0\n")
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path))
    splits = load_splits(DataConfig(train="sst2"))
    assert (len(splits.train), len(splits.dev), splits.labels) == (4, 1, ["0", "1"])
    assert splits.test[0].text == "awful "
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="set TUNELAB_DATA_DIR"):
        load_splits(DataConfig(train="ag_news"))


def test_numeric_labels_sort_numerically(tmp_path: Path):
    rows = "".join(f"t{i}\t{y}\n" for i, y in enumerate(["10", "2", "1", "2", "10", "1"]))
    splits = load_splits(DataConfig(train=str(write(tmp_path / "n.tsv", "text\tlabel\n" + rows)),
                                    dev_fraction=0.5))
    assert splits.labels == ["1", "2", "10"]


def test_batch_plans_cover_every_example_once_and_bucket_by_length():
    lengths = [(i * 37) % 50 + 1 for i in range(1000)]
    plan = plan_batches(lengths, 16, seed=0, epoch=0, bucket=True)
    assert sorted(i for b in plan for i in b) == list(range(1000))
    assert plan == plan_batches(lengths, 16, seed=0, epoch=0, bucket=True)
    assert plan != plan_batches(lengths, 16, seed=0, epoch=1, bucket=True)

    def padded(p: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in p)

    random_plan = plan_batches(lengths, 16, seed=0, epoch=0, bucket=False)
    assert padded(plan) < 0.6 * padded(random_plan)


def test_a_row_with_too_many_fields_is_an_error(tmp_path: Path):
    path = write(tmp_path / "t.tsv", "sentence\tlabel\nok\t1\nstray\ttab in text\t1\n")
    with pytest.raises(DataError) as exc:
        read_examples(path, "tsv", True, Columns(text="sentence", label="label"))
    assert str(exc.value) == f"{path}:3: expected 2 tab-separated fields, found 3"


def test_macro_f1_scores_only_labels_present():
    from tunelab.tasks.metrics import classification_metrics

    assert classification_metrics([0, 1, 1], [0, 1, 1], n_labels=4) == {"accuracy": 1.0,
                                                                         "macro_f1": 1.0}
    assert classification_metrics([0, 0], [0, 1], n_labels=2)["macro_f1"] == pytest.approx(1 / 3)
