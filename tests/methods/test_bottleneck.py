"""Bottleneck adapters: Houlsby and Pfeiffer placement, sizes, tunelab's own adapter format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from test_methods_contract import logits, method_cfg, perturb, tiny_classifier
from tunelab import methods
from tunelab.config import validate
from tunelab.errors import ConfigError, MethodError
from tunelab.methods.base import adapter_layers
from tunelab.methods.peft_format import load_adapter, save_adapter


def placed(model) -> list[str]:
    return sorted(adapter_layers(model))


def test_houlsby_after_attention_and_feed_forward_pfeiffer_after_feed_forward_only():
    houlsby, pfeiffer = tiny_classifier(), tiny_classifier()
    methods.apply(houlsby, method_cfg("houlsby", {}))
    methods.apply(pfeiffer, method_cfg("pfeiffer", {}))
    layers = [f"bert.encoder.layer.{i}" for i in (0, 1)]
    assert placed(houlsby) == sorted([f"{x}.attention.output.dense" for x in layers]
                                     + [f"{x}.output.dense" for x in layers])
    assert placed(pfeiffer) == [f"{x}.output.dense" for x in layers]


def test_llama_and_gpt2_placement(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    from sft_fixtures import tiny_llama_dir

    llama = AutoModelForCausalLM.from_pretrained(tiny_llama_dir(tmp_path / "llama"))
    methods.apply(llama, method_cfg("houlsby", {}))
    assert [n.split(".", 3)[-1] for n in placed(llama)] == ["mlp.down_proj", "self_attn.o_proj"] * 2
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2, n_positions=16))
    methods.apply(gpt2, method_cfg("pfeiffer", {"reduction_factor": 4}))
    assert placed(gpt2) == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    layer = adapter_layers(gpt2)["transformer.h.0.mlp.c_proj"]
    assert layer.fan_in_fan_out and layer.adapter_down.out_features == 8  # 32 / 4


def test_bottleneck_size_and_non_linearity():
    model = tiny_classifier()
    report = methods.apply(model, method_cfg("houlsby", {"reduction_factor": 8}))
    assert {m.adapter_down.out_features for m in adapter_layers(model).values()} == {4}  # 32 / 8
    assert {type(m.adapter_act).__name__ for m in adapter_layers(model).values()} == {"SiLU"}
    assert "bottleneck size 4 (reduction factor 8), silu; not mergeable" in report.lines()
    # 4 adapters x (down 32*4+4, up 4*32+32) + classifier 32*3+3
    assert report.trainable == 4 * (132 + 160) + 99


def test_a_reduction_factor_above_the_width_still_leaves_one_unit():
    model = tiny_classifier()
    methods.apply(model, method_cfg("pfeiffer", {"reduction_factor": 64}))
    assert {m.adapter_down.out_features for m in adapter_layers(model).values()} == {1}


def test_saved_in_tunelab_format_that_peft_does_not_mistake_for_its_own(tmp_path):
    from peft import PeftModel

    model = tiny_classifier()
    cfg = method_cfg("pfeiffer", {"reduction_factor": 4})
    report = methods.apply(model, cfg)
    perturb(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    written = json.loads((tmp_path / "tunelab_adapter.json").read_text())
    assert {k: written[k] for k in ("format", "peft_type", "method", "reduction_factor",
                                    "non_linearity", "modules_to_save")} == {
        "format": "tunelab", "peft_type": "BOTTLENECK", "method": "pfeiffer",
        "reduction_factor": 4, "non_linearity": "relu", "modules_to_save": ["classifier"]}
    keys = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert "base_model.model.bert.encoder.layer.0.output.dense.adapter_up.weight" in keys
    fresh = tiny_classifier()
    load_adapter(fresh, tmp_path, ["classifier"])
    assert torch.equal(logits(fresh.eval()), logits(model.eval()))
    with pytest.raises(ValueError):  # peft finds no adapter_config.json: a loud failure
        PeftModel.from_pretrained(tiny_classifier(), tmp_path)


def test_unknown_model_type_asks_for_targets():
    model = tiny_classifier()
    model.config.model_type = "mystery"
    with pytest.raises(MethodError, match=r"method.targets: houlsby has no default for model type "
                                          r"'mystery' .*e.g. method.targets: \[o_proj, down_proj\]"):
        methods.apply(model, method_cfg("houlsby", {}))


def test_config_errors_name_the_key():
    def err(method: dict) -> str:
        with pytest.raises(ConfigError) as exc:
            validate({"data": {"train": "x"}, "method": method})
        return str(exc.value)

    assert "unknown key 'method.reduction' (did you mean 'method.reduction_factor'?)" in err(
        {"name": "pfeiffer", "reduction": 8})
    assert "method.non_linearity: input should be 'relu', 'gelu', 'silu' or 'tanh'" in err(
        {"name": "houlsby", "non_linearity": "swish"})
    assert "method.reduction_factor: input should be greater than or equal to 1" in err(
        {"name": "houlsby", "reduction_factor": 0})
