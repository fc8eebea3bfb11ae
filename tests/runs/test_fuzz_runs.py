"""Run directories, fuzzed: run.json and config.yaml damaged or of the wrong shape. Read, or
a tunelab error (CheckpointError, ConfigError) naming the file."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profile import field_text, mutated, reads_or_fails_cleanly

from tunelab.config import dump_config, load_config
from tunelab.runs.layout import load_run_config, read_run_info, task_runs

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | field_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_text, inner, max_size=3),
    max_leaves=8)
INFO = {"task": "classification", "base_model": "minilm", "artifact": "adapter",
        "labels": ["0", "1"], "max_length": 128}
CONFIG = dump_config(load_config(None, ["data.train=sst2", "output_dir=runs/x"])).encode()


@st.composite
def run_json(draw) -> bytes:
    info = dict(draw(st.sampled_from([INFO, {**INFO, "task": "multitask", "tasks": {"a": {}}}])))
    info.update(draw(st.dictionaries(st.sampled_from(["task", "artifact", "tasks", "labels"]),
                                     json_values, max_size=2)))
    text = json.dumps(draw(st.sampled_from([info, draw(json_values)])))
    return draw(mutated(text.encode()))


@given(info=run_json(), config=mutated(CONFIG), task=st.sampled_from([None, "a", "b"]))
def test_run_directories(info, config, task):
    with tempfile.TemporaryDirectory() as d:
        run = Path(d)
        (run / "adapter").mkdir()
        (run / "run.json").write_bytes(info)
        (run / "config.yaml").write_bytes(config)
        reads_or_fails_cleanly(lambda: read_run_info(run), run)
        reads_or_fails_cleanly(lambda: task_runs(run, task), run)
        reads_or_fails_cleanly(lambda: load_run_config(run), run)
