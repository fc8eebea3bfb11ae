"""VeRA: shared seeded projections (as peft draws them), saved with the adapter, GPT-2 Conv1D."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from test_methods_contract import logits, method_cfg, perturb, tiny_classifier
from tunelab import methods
from tunelab.methods.peft_format import load_adapter, save_adapter
from tunelab.methods.vera import vera_layers


def test_layers_share_one_projection_pair_sized_for_the_largest_layer():
    model = tiny_classifier()
    report = methods.apply(model, method_cfg("vera", {"r": 8}))  # all-linear: in/out up to 64
    shared = {id(m.projections) for m in vera_layers(model).values()}
    assert len(shared) == 1
    proj = next(iter(vera_layers(model).values())).projections
    assert proj.a.shape == (8, 64) and proj.b.shape == (64, 8)
    assert not proj.a.requires_grad and "shared A (8, 64) and B (64, 8)" in report.notes[0]
    # trainable: per layer lambda_b (out) + lambda_d (r); the projections are not parameters
    n_vera = sum(m.out_features + 8 for m in vera_layers(model).values())
    assert report.trainable == n_vera + sum(p.numel() for p in model.classifier.parameters())


def test_the_file_holds_the_projections_and_loading_uses_them(tmp_path):
    model = tiny_classifier()
    cfg = method_cfg("vera", {"r": 4, "targets": ["query", "value"], "projection_seed": 5})
    report = methods.apply(model, cfg)
    perturb(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    state = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert state["base_model.vera_A"].shape == (4, 32) and state["base_model.vera_B"].shape == (32, 4)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["save_projection"] and config["projection_prng_key"] == 5
    # another seed in the config: the stored projections still win, so outputs are unchanged
    config["projection_prng_key"] = 6
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    fresh = tiny_classifier()
    load_adapter(fresh, tmp_path, ["classifier"])
    assert torch.equal(logits(fresh.eval()), logits(model.eval()))


def test_peft_adapter_without_projections_is_redrawn_from_the_seed(tmp_path):
    from peft import VeraConfig, get_peft_model

    theirs = get_peft_model(tiny_classifier(), VeraConfig(
        task_type="SEQ_CLS", r=4, target_modules=["query", "value"], save_projection=False,
        projection_prng_key=11)).eval()
    perturb(theirs)
    theirs.save_pretrained(tmp_path)
    assert "base_model.vera_A" not in load_file(str(tmp_path / "adapter_model.safetensors"))
    model = tiny_classifier()
    load_adapter(model, tmp_path, ["classifier"])
    assert torch.allclose(logits(model.eval()), logits(theirs), atol=1e-5, rtol=0)


def test_projections_follow_the_model_to_another_dtype():
    model = tiny_classifier()
    methods.apply(model, method_cfg("vera", {"r": 4}))
    perturb(model)
    want = logits(model)
    model.double()
    got = logits(model)
    proj = next(iter(vera_layers(model).values())).projections
    assert proj.a.dtype == torch.float64
    assert torch.allclose(got.float(), want, atol=1e-5)


def test_vera_on_gpt2_conv1d_merges_and_loads_in_peft(tmp_path):
    from sft_fixtures import assert_conv1d_adapter_roundtrip, tiny_gpt2

    model = tiny_gpt2()
    cfg = method_cfg("vera", {"r": 4, "targets": ["c_attn", "c_proj"]})
    methods.apply(model, cfg)
    assert_conv1d_adapter_roundtrip(model, cfg, tmp_path / "ad")
