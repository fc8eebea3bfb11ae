"""Catalog names work for every data path key (data.train, data.dev, data.test, eval --data);
where a name cannot serve, the error says which keys take names. And the CLI prints a bad
data or config file as one `error:` line and exits non-zero (the fuzzed readers' errors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis_profile import mutated

from tunelab.cli import main
from tunelab.config import ConllDataConfig, DataConfig
from tunelab.data.conll import load_conll_splits
from tunelab.data.conll import read_like_training as read_conll_like_training
from tunelab.data.splits import eval_items, load_splits, read_like_training
from tunelab.errors import DataError


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "shared-data"
    (root / "sst2").mkdir(parents=True)
    for name, words in (("train", "good bad fine awful"), ("dev", "nice poor"),
                        ("test_labeled", "great dull")):
        rows = [f"{w}\t{i % 2}" for i, w in enumerate(words.split())]
        (root / "sst2" / f"{name}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (root / "ag_news").mkdir()
    (root / "ag_news" / "test.tsv").write_text("a story\t1\n")
    (root / "conll2003").mkdir()
    for name, word in (("train", "Paris"), ("valid", "Rome"), ("test", "Oslo")):
        (root / "conll2003" / f"{name}.txt").write_text(f"{word} B-LOC\nis O\n")
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(root))
    return root


def test_dev_and_test_take_catalog_names(tmp_path: Path, data_dir: Path):
    """The known bug: data.dev=sst2 failed with "sst2: file not found"."""
    train = tmp_path / "mine.tsv"
    train.write_text("text\tlabel\nyes\t1\nno\t0\n")
    splits = load_splits(DataConfig(train=str(train), dev="sst2", test="SST2"))
    assert [e.text for e in splits.dev] == ["nice", "poor"]
    assert [e.text for e in splits.test] == ["great", "dull"]
    assert splits.dev[0].where == f"{data_dir / 'sst2' / 'dev.tsv'}:2"


def test_eval_data_takes_a_catalog_name(data_dir: Path):
    class Run:
        data = DataConfig(train="sst2")

    dev, name = eval_items(Run, "sst2", "dev", load_splits, read_like_training)
    test, _ = eval_items(Run, "sst2", "test", load_splits, read_like_training)
    assert ([e.text for e in dev], [e.text for e in test], name) == (
        ["nice", "poor"], ["great", "dull"], "sst2")


def test_a_missing_split_or_file_says_which_keys_take_names(tmp_path: Path, data_dir: Path):
    cfg = DataConfig(train="sst2", dev="ag_news")
    with pytest.raises(DataError, match=r"^ag_news: the catalog dataset has no dev file \(it has "
                                        r"train, test\); give a file path for the dev data"):
        load_splits(cfg)
    with pytest.raises(DataError, match=r"nope.tsv: file not found \(data.train, data.dev, "
                                        r"data.test and `tunelab eval --data` each take a file "
                                        r"path or a catalog name \(sst2, ag_news"):
        read_like_training(DataConfig(train="sst2"), tmp_path / "nope.tsv")


def test_conll_dev_test_and_eval_take_catalog_names(tmp_path: Path, data_dir: Path):
    train = tmp_path / "mine.txt"
    train.write_text("Berlin B-LOC\nrocks O\n")
    splits = load_conll_splits(ConllDataConfig(train=str(train), dev="conll2003", test="conll2003"))
    assert (splits.dev[0].words[0], splits.test[0].words[0]) == ("Rome", "Oslo")
    cfg = ConllDataConfig(train="conll2003")
    assert read_conll_like_training(cfg, "conll2003", "test")[0].words[0] == "Oslo"


# ----------------------------------------------------------------------------- the CLI


def _one_error_line(capsys: pytest.CaptureFixture[str], code: int, *names: str) -> str:
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert all(n in err for n in names), err
    return err


def test_cli_prints_one_line_for_a_non_utf8_tsv(tmp_path: Path, capsys):
    data = tmp_path / "train.tsv"
    data.write_bytes("text\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"data:\n  train: {data}\n  augment: {{copies: 1}}\n")
    code = main(["data", "augment", str(cfg), "--out", str(tmp_path / "out.jsonl")])
    err = _one_error_line(capsys, code, f"{data}:2: byte 0xe9 at offset 14", "data.encoding")
    assert "Traceback" not in err


@given(raw=mutated(b"data:\n  train: sst2\ntrain:\n  lr: 0.001\n"))
def test_cli_config_show_never_tracebacks(raw):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "run.yaml"
        cfg.write_bytes(raw)
        code = main(["config", "show", str(cfg)])
    assert code in (0, 2)


def test_cli_prints_one_line_for_a_bad_config(tmp_path: Path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(b"data:\n  train: sst2\n\xff\n")
    code = main(["config", "show", str(cfg)])
    _one_error_line(capsys, code, f"{cfg}:3: byte 0xff at offset 20")

