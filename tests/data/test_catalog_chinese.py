"""The Chinese sets in the data directory, read through the catalog: counts and labels as
the data README states them, quoted CSV fields with commas, the dev split held out, known
empty rows left out aloud, and the zipped set unzipped into the cache."""

from __future__ import annotations

import math
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import real_data_dir

from tunelab.config import load_config
from tunelab.data import load_splits
from tunelab.data.catalog import lookup, unzipped
from tunelab.errors import DataError

TOPICS = {"平板": 10000, "水果": 10000, "洗发水": 10000, "衣服": 10000, "酒店": 10000,
          "计算机": 3992, "书籍": 3851, "手机": 2323, "蒙牛": 2033, "热水器": 574}  # 575 - 1 empty


@pytest.fixture
def data(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("TUNELAB_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path / "cache"))
    return real_data_dir()


def splits(name: str, *overrides: str):
    cfg = load_config(None, ["model.name=minilm", f"data.train={name}", "output_dir=/tmp/unused",
                             *overrides])
    return load_splits(cfg.data)


@pytest.mark.parametrize("name, counts, dropped", [
    ("waimai_10k", {"0": 7987, "1": 4000}, 0),
    ("chnsenticorp_htl", {"0": 2443, "1": 5322}, 1),  # 2,444 negatives, one of them empty
    ("online_shopping_10_cats", TOPICS, 1),
])
def test_counts_labels_and_held_out_dev(data: Path, name: str, counts: dict[str, int],
                                        dropped: int) -> None:
    entry = lookup(name)
    assert entry is not None and entry.dev is None and entry.test is None
    s = splits(name)
    assert Counter(e.label for e in s.train + s.dev) == counts
    assert s.labels == sorted(counts)
    total = sum(counts.values())
    assert len(s.dev) == math.ceil(total * 0.1)  # data.dev_fraction's default, stratified
    assert f"held out {len(s.dev)} training examples (10%, stratified, seed 0)" in s.notes[-1]
    assert sum(f"{name}: left out 1 row(s) with an empty text" in n for n in s.notes) == dropped
    assert all(e.text.strip() for e in s.train + s.dev)
    # each label keeps its share in dev (stratified)
    share = Counter(e.label for e in s.dev)
    for label, n in counts.items():
        assert abs(share[label] - n * 0.1) <= 1
    # data.split_seed picks another dev set of the same size; the same seed the same one
    other = splits(name, "data.split_seed=1")
    assert len(other.dev) == len(s.dev) and {e.where for e in other.dev} != {e.where for e in s.dev}
    assert [e.where for e in splits(name).dev] == [e.where for e in s.dev]


def test_quoted_fields_with_commas_and_doubled_quotes(data: Path) -> None:
    s = splits("chnsenticorp_htl")
    first = next(e for e in s.train + s.dev if e.where.endswith(":2"))
    # the CSV row is 1,"距离川沙公路较近,但是...""蔡陆线""的话,...": one field, quotes undoubled
    assert first.label == "1"
    assert first.text.startswith("距离川沙公路较近,但是公交指示不对,如果是\"蔡陆线\"的话")


def test_sentiment_of_online_shopping_by_column(data: Path) -> None:
    s = splits("online_shopping_10_cats", "data.columns.text=review", "data.columns.label=label")
    assert Counter(e.label for e in s.train + s.dev) == {"1": 31727, "0": 31046}  # the empty one a 1


def test_zip_member_unzipped_once_and_bad_member_named(data: Path, tmp_path: Path) -> None:
    archive = data / "online_shopping_10_cats" / "online_shopping_10_cats.zip"
    out = unzipped(archive, "online_shopping_10_cats.csv")
    assert out.is_relative_to(tmp_path / "cache")
    with zipfile.ZipFile(archive) as zf:
        assert out.read_bytes() == zf.read("online_shopping_10_cats.csv")
    stamp = out.stat().st_mtime_ns
    assert unzipped(archive, "online_shopping_10_cats.csv") == out
    assert out.stat().st_mtime_ns == stamp  # not extracted again
    with pytest.raises(DataError, match="cannot read nothing.csv from the zip archive"):
        unzipped(archive, "nothing.csv")


def test_empty_text_outside_the_catalog_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("label,review\n1,\"好吃,量大\"\n0,\n", encoding="utf-8")
    cfg = load_config(None, ["model.name=minilm", f"data.train={path}", f"data.dev={path}",
                             "data.columns.text=review", "output_dir=/tmp/unused"])
    with pytest.raises(DataError, match=r"reviews.csv:3: empty text in column 'review'"):
        load_splits(cfg.data)
