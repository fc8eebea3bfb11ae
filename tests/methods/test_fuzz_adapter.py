"""Adapter directories, fuzzed: adapter_config.json (any JSON, wrong types in every key,
damaged bytes) and the safetensors file's header. Read, or an AdapterError naming the file."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis_profile import field_text, mutated, reads_or_fails_cleanly
from safetensors.torch import save

from tunelab.errors import AdapterError
from tunelab.methods.peft_format import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    method_config,
    read_adapter_config,
    read_weights,
    weights_file,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | field_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(field_text, inner, max_size=3),
    max_leaves=8)
LORA = {"peft_type": "LORA", "task_type": "SEQ_CLS", "base_model_name_or_path": "minilm",
        "r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"],
        "use_rslora": False, "use_dora": False, "bias": "none", "rank_pattern": {},
        "alpha_pattern": {}, "modules_to_save": ["classifier"], "inference_mode": True}
IA3 = {"peft_type": "IA3", "target_modules": ["query"], "feedforward_modules": []}
KEYS = sorted({*LORA, *IA3, "init_r", "target_r", "method", "reduction_factor"})


@st.composite
def adapter_config(draw) -> bytes:
    config = dict(draw(st.sampled_from([LORA, IA3, {"peft_type": "ADALORA", "init_r": 4}])))
    config.update(draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=3)))
    text = json.dumps(config)
    if draw(st.booleans()):
        text = draw(st.sampled_from([text, json.dumps(draw(json_values))]))
    if draw(st.booleans()):  # a duplicate key (the last one wins, as in json.loads)
        text = text.replace("{", '{"r": "x", ', 1)
    return draw(mutated(text.encode()))


@st.composite
def safetensors_bytes(draw) -> bytes:
    data = save({"base_model.model.x.lora_A.weight": torch.zeros(2, 3),
                 "base_model.model.x.lora_B.weight": torch.ones(3, 2)})
    how = draw(st.sampled_from(["keep", "header_length", "header_json", "bytes"]))
    if how == "header_length":
        data = struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + data[8:]
    elif how == "header_json":
        header = draw(st.one_of(json_values, st.dictionaries(st.sampled_from(
            ["x", "__metadata__"]), st.fixed_dictionaries({}, optional={
                "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "F8_E4M3", "Q"]) | json_values,
                "shape": st.lists(st.integers(-2, 4), max_size=3) | json_values,
                "data_offsets": st.lists(st.integers(-1, 40), max_size=3) | json_values}),
            max_size=2)))
        blob = json.dumps(header).encode()
        data = struct.pack("<Q", len(blob)) + blob + b"\0" * draw(st.integers(0, 48))
    elif how == "bytes":
        data = draw(mutated(data))
    return data


@given(config=adapter_config(), weights=safetensors_bytes())
def test_adapter_directories(config, weights):
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / CONFIG_FILE).write_bytes(config)
        (Path(d) / WEIGHTS_FILE).write_bytes(weights)

        def read():
            cfg, method, path = read_adapter_config(d)
            method_config(cfg, method, path)
            return read_weights(weights_file(d, path))

        reads_or_fails_cleanly(read, Path(d), AdapterError)


def test_damaged_weights_name_the_file(tmp_path: Path):
    path = tmp_path / WEIGHTS_FILE
    path.write_bytes(save({"a": torch.zeros(4)})[:-3])
    with pytest.raises(AdapterError, match=rf"^{path}: not a readable safetensors file"):
        read_weights(path)
