"""YAML configs and `key=value` overrides, fuzzed: read and validated, or a ConfigError naming
the file (and line or key). No other exception escapes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profile import field_text, mutated, reads_or_fails_cleanly

from tunelab.config import load_config
from tunelab.config.tree import parse_overrides, read_yaml
from tunelab.errors import ConfigError

KEYS = ["task", "model", "data", "train", "method", "output_dir", "name", "lr", "epochs",
        "train.lr", "data.train", "data.encoding", "method.r", "targets", "tasks", 1, None, True]
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | field_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner,
                                                                 max_size=4),
    max_leaves=10)
VALID = {"task": "classification", "model": {"name": "minilm"}, "data": {"train": "sst2"},
         "method": {"name": "lora", "r": 4}, "train": {"lr": 1e-3, "epochs": 1}}


@st.composite
def config_bytes(draw) -> bytes:
    tree = draw(st.one_of(st.just(VALID), yaml_values,
                          st.dictionaries(st.sampled_from(KEYS[:6]), yaml_values, max_size=5)))
    text = yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)
    if draw(st.booleans()):  # a duplicate key: a second section of the same name
        text += draw(st.sampled_from(["train:\n  lr: 2\n", "data: {}\n", "model: x\n"]))
    return draw(mutated(text.encode("utf-8")))


@given(raw=config_bytes())
def test_yaml_configs(raw):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.yaml"
        path.write_bytes(raw)
        reads_or_fails_cleanly(lambda: read_yaml(path), path, ConfigError)
        reads_or_fails_cleanly(lambda: load_config(path), path, ConfigError)


@given(overrides=st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
        ["train.lr", "data.train", "model", "model.name.x", "data.encoding", "method.r",
         "train", "a..b", "", ".x", "data.columns.text"]), st.text(max_size=20)),
    st.text(max_size=20),
    st.sampled_from(["a=" + "[" * 1200, "train.lr=2024-02-30", "x=" + "9" * 5000,
                     "data.train=!!python/object:os.system", "train.lr=&a *a"])), max_size=4))
def test_overrides(overrides):
    def apply():
        return load_config(None, overrides,
                           base={"data": {"train": "sst2"}, "model": {"name": "minilm"}})

    try:
        parse_overrides(overrides)
        apply()
    except ConfigError as exc:
        assert "override" in str(exc) or "config" in str(exc), str(exc)


def test_duplicate_key_is_an_error_naming_file_and_line(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  train: sst2\ntrain:\n  lr: 0.1\ntrain:\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=rf"^{path}:5: not valid YAML \(duplicate key 'train'\)"):
        read_yaml(path)


def test_bad_bytes_and_bom_in_a_config(tmp_path: Path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"\xef\xbb\xbfdata:\n  train: sst2\n")
    assert read_yaml(path) == {"data": {"train": "sst2"}}
    path.write_bytes(b"data:\n  train: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2: byte 0xe9 at offset 18 is not valid utf-8"):
        read_yaml(path)
