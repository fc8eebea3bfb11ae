"""IA3: peft's default targets, which layers scale their input, config errors, GPT-2 Conv1D."""

from __future__ import annotations

import json

import pytest
import torch

from test_methods_contract import method_cfg, tiny_classifier
from tunelab import methods
from tunelab.config import validate
from tunelab.errors import ConfigError, MethodError
from tunelab.methods.ia3 import DEFAULT_FEEDFORWARD, DEFAULT_TARGETS, ia3_layers
from tunelab.methods.peft_format import save_adapter


def test_default_tables_agree_with_peft():
    from peft.utils.constants import (TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF,
                                      TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS)

    for kind in DEFAULT_TARGETS:
        assert sorted(DEFAULT_TARGETS[kind]) == sorted(TARGETS[kind]), kind
        assert sorted(DEFAULT_FEEDFORWARD[kind]) == sorted(FF[kind]), kind


def test_bert_defaults_scale_keys_values_and_feed_forward_inputs():
    model = tiny_classifier()
    report = methods.apply(model, method_cfg("ia3", {}))
    layers = ia3_layers(model)
    assert sorted({n.split(".", 4)[-1] for n in layers}) == [
        "attention.output.dense", "attention.self.key", "attention.self.value", "output.dense"]
    for name, layer in layers.items():
        assert layer.is_feedforward == name.endswith("output.dense"), name  # peft's suffix rule
        assert layer.ia3_l.shape == ((1, layer.in_features) if layer.is_feedforward
                                     else (layer.out_features, 1))
        assert torch.equal(layer.ia3_l, torch.ones_like(layer.ia3_l))
    assert "feed-forward layers (input scaled): 4 of 8" in report.lines()


def test_llama_defaults(tmp_path):
    from transformers import AutoModelForCausalLM

    from sft_fixtures import tiny_llama_dir

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir(tmp_path / "llama"))
    methods.apply(model, method_cfg("ia3", {}))
    layers = ia3_layers(model)
    assert sorted({n.rsplit(".", 1)[-1] for n in layers}) == ["down_proj", "k_proj", "v_proj"]
    assert [n for n, m in layers.items() if m.is_feedforward] == [
        f"model.layers.{i}.mlp.down_proj" for i in (0, 1)]


def test_unknown_model_type_asks_for_targets():
    model = tiny_classifier()
    model.config.model_type = "mystery"
    with pytest.raises(MethodError, match="method.targets: ia3 has no default for model type "
                                          "'mystery' .*; list the layers"):
        methods.apply(model, method_cfg("ia3", {}))


def test_feedforward_must_be_among_the_targets():
    with pytest.raises(ConfigError) as exc:
        validate({"data": {"train": "x"},
                  "method": {"name": "ia3", "targets": ["key", "value"], "feedforward": ["dense"]}})
    assert str(exc.value) == ("config: method.feedforward: dense not in method.targets; a "
                              "feed-forward layer must also be a target (as in peft) (got ['dense'])")


def test_written_names_are_short_when_they_pick_the_same_layers(tmp_path):
    model = tiny_classifier()
    cfg = method_cfg("ia3", {"targets": ["key", "value", "dense"], "feedforward": ["dense"]})
    report = methods.apply(model, cfg)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written["peft_type"] == "IA3"
    assert written["target_modules"] == ["dense", "key", "value"]
    assert written["feedforward_modules"] == ["dense"]


def test_ia3_on_gpt2_conv1d_merges_and_loads_in_peft(tmp_path):
    from sft_fixtures import assert_conv1d_adapter_roundtrip, tiny_gpt2

    model = tiny_gpt2()
    cfg = method_cfg("ia3", {})  # peft's GPT-2 defaults: c_attn, mlp.c_proj (feed-forward)
    methods.apply(model, cfg)
    assert len(ia3_layers(model)) == 4
    assert_conv1d_adapter_roundtrip(model, cfg, tmp_path / "ad", scale=0.1)


def test_a_feedforward_name_that_matches_no_target_is_an_error():
    cfg = method_cfg("ia3", {"targets": r".*\.(key|value)", "feedforward": ["fc2"]})
    with pytest.raises(MethodError, match="method.feedforward: fc2 matches none of the 4 targeted "
                                          "layers"):
        methods.apply(tiny_classifier(), cfg)
