"""The image-folder reader (tunelab/data/images.py): label folders, split folders, a seeded dev
split, and clear errors for folders that cannot be training data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tunelab.config.vision import ImageDataConfig
from tunelab.data.images import image_splits, main, read_folder, write_digits
from tunelab.errors import DataError


def _png(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4), shade).save(path)


def _folders(root: Path, labels: dict[str, int]) -> Path:
    for label, n in labels.items():
        for i in range(n):
            _png(root / label / f"{i}.png", i)
    return root


def _splits(**kw):
    return image_splits(ImageDataConfig(**kw))


def test_label_folders_with_a_seeded_stratified_dev_split(tmp_path: Path):
    root = _folders(tmp_path / "imgs", {"cat": 10, "dog": 20})
    s = _splits(train=str(root), dev_fraction=0.2, split_seed=3)
    assert s.labels == ["cat", "dog"]
    assert [sum(e.label == lab for e in s.dev) for lab in s.labels] == [2, 4]  # 20% of each
    assert len(s.train) == 24 and not {e.path for e in s.train} & {e.path for e in s.dev}
    again = _splits(train=str(root), dev_fraction=0.2, split_seed=3)
    assert [e.path for e in again.dev] == [e.path for e in s.dev]  # seeded
    assert "held out" in s.notes[0]


def test_split_folders_train_validation_test(tmp_path: Path):
    _folders(tmp_path / "d" / "train", {"0": 3, "1": 3, "10": 3, "2": 3})
    _folders(tmp_path / "d" / "validation", {"0": 1, "1": 2})
    _folders(tmp_path / "d" / "test", {"2": 2})
    s = _splits(train=str(tmp_path / "d"))
    assert s.labels == ["0", "1", "2", "10"]  # numeric order
    assert (len(s.train), len(s.dev), len(s.test)) == (12, 3, 2)
    assert all("validation" in str(e.path) for e in s.dev)


def test_a_label_called_train_is_just_a_label(tmp_path: Path):
    root = _folders(tmp_path / "d", {"train": 2, "bus": 2})
    s = _splits(train=str(root), dev_fraction=0.5)
    assert s.labels == ["bus", "train"]


def test_max_examples_sample_is_seeded(tmp_path: Path):
    root = _folders(tmp_path / "d", {"a": 20, "b": 20})
    s = _splits(train=str(root), max_train_examples=10, split_seed=1)
    assert len(s.train) == 10
    assert s.train == _splits(train=str(root), max_train_examples=10, split_seed=1).train


@pytest.mark.parametrize("make, message", [
    (lambda r: r.mkdir(), "holds no label folders"),
    (lambda r: (r / "cat").mkdir(parents=True), r"the label folder .*cat holds no images"),
    (lambda r: (_folders(r, {"cat": 2}), (r / "dog").mkdir(),
                (r / "dog" / "notes.txt").write_text("hi")),
     r"dog/notes\.txt: not an image Pillow can read"),
    (lambda r: (_folders(r, {"cat": 2, "dog": 2}), (r / "dog" / "broken.png").write_bytes(b"xx")),
     r"dog/broken\.png: not an image"),
    (lambda r: _folders(r, {"cat": 4}),
     r"holds one label folder only \(cat\); a classifier needs at least two labels"),
    (lambda r: (_folders(r, {"cat": 2, "dog": 2}), _png(r / "loose.png")),
     r"loose\.png lies outside a label folder"),
    (lambda r: None, "is not a folder"),
])
def test_bad_folders_fail_by_name(tmp_path: Path, make, message):
    root = tmp_path / "imgs"
    make(root)
    with pytest.raises(DataError, match=message):
        _splits(train=str(root))


def test_dev_label_unknown_to_train(tmp_path: Path):
    train = _folders(tmp_path / "t", {"a": 2, "b": 2})
    dev = _folders(tmp_path / "v", {"a": 1, "z": 1})
    with pytest.raises(DataError, match="data.dev: label folder 'z' is not among"):
        _splits(train=str(train), dev=str(dev))


def test_hidden_files_are_ignored(tmp_path: Path):
    root = _folders(tmp_path / "d", {"a": 2, "b": 2})
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "a" / ".DS_Store").write_bytes(b"\0")
    assert len(read_folder(root, "data.train")) == 4


def test_digits_writer(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = write_digits(tmp_path / "digits", per_label=3)
    examples = read_folder(out, "data.train")
    assert len(examples) == 30 and {e.label for e in examples} == {str(d) for d in range(10)}
    with Image.open(examples[0].path) as im:
        assert im.size == (8, 8) and im.mode == "L"
    main(["--digits", str(tmp_path / "cli"), "--per-label", "2"])
    assert "wrote 20 images" in capsys.readouterr().out
