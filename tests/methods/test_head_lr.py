"""train.head_lr_scale: the task head trains at train.lr x the scale, the adapter at train.lr."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import tiny_config
from test_loraplus import group_of
from test_methods_contract import method_cfg, tiny_classifier
from tunelab import methods
from tunelab.config import TrainConfig, validate
from tunelab.errors import ConfigError
from tunelab.recipes.run import train
from tunelab.train.optim import build_optimizer


def test_head_tensors_get_scale_times_lr_and_the_adapter_keeps_lr():
    model = tiny_classifier()
    report = methods.apply(model, method_cfg("lora", {"loraplus_lr_ratio": 4}), head_lr_scale=3)
    assert "task head trains at train.lr x 3 (2 tensors)" in report.lines()
    opt = build_optimizer(model, TrainConfig(lr=1e-3), lr_scales=report.lr_scales)
    seen = set()
    for name, p in model.named_parameters():
        if p.requires_grad:
            want = 3e-3 if name.startswith("classifier.") else 4e-3 if ".lora_B." in name \
                else 1e-3
            assert group_of(opt, p)["lr"] == pytest.approx(want), name
            seen.add(want)
    assert seen == {1e-3, 3e-3, 4e-3}


def test_scale_one_adds_no_group():
    model = tiny_classifier()
    assert methods.apply(model, method_cfg("lora", {}), head_lr_scale=1.0).lr_scales == {}


def test_a_model_without_a_task_head_is_refused():
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2))
    with pytest.raises(ConfigError, match=r"train.head_lr_scale is 2, but this model has no "
                                          r"separate task head .* remove train.head_lr_scale"):
        methods.apply(model, method_cfg("lora", {"targets": ["q_proj"]}), head_lr_scale=2)


@pytest.mark.parametrize("bad", [0, -1, 101])
def test_out_of_range_scale_is_refused(bad):
    with pytest.raises(ConfigError, match="train.head_lr_scale"):
        validate({"data": {"train": "x"}, "train": {"head_lr_scale": bad}})


def test_a_run_moves_the_head_scale_times_as_far(tiny_model_dir, tiny_data, tmp_path):
    """AdamW's first steps move each coordinate about lr, so after a few constant-lr steps the
    head has moved ~scale times as far as at scale 1, while LoRA's B matrices move alike."""
    def trained(out: str, lr: float, scale: float) -> dict[str, torch.Tensor]:
        tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / out, max_steps=3,
                           eval_every=None, lr=lr, warmup_ratio=0.0, schedule="constant",
                           load_best_at_end=False, head_lr_scale=scale, weight_decay=0.0)
        train(validate(tree), log=lambda _: None)
        return load_file(str(tmp_path / out / "adapter" / "adapter_model.safetensors"))

    start = trained("start", 1e-9, 1.0)  # moves < 1e-8 per coordinate: the initial head
    plain, scaled = trained("plain", 1e-4, 1.0), trained("scaled", 1e-4, 8.0)
    head = [k for k in start if ".classifier." in k]
    assert head

    def moved(state: dict[str, torch.Tensor], keys: list[str]) -> float:
        return float(sum((state[k] - start[k]).norm() ** 2 for k in keys) ** 0.5)

    ratio = moved(scaled, head) / moved(plain, head)
    assert 5.0 < ratio < 9.0, ratio
    b = [k for k in start if ".lora_B." in k]
    assert moved(scaled, b) == pytest.approx(moved(plain, b), rel=0.25)
