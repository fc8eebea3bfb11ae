"""LoRA+: the B matrices train at a higher learning rate, through optimizer parameter groups."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from test_methods_contract import method_cfg, tiny_classifier
from tunelab import methods
from tunelab.config import TrainConfig, validate
from tunelab.errors import ConfigError
from tunelab.train.optim import build_optimizer, build_scheduler
from tunelab.recipes.run import train


def group_of(opt: torch.optim.Optimizer, param: torch.nn.Parameter) -> dict:
    return next(g for g in opt.param_groups if any(p is param for p in g["params"]))


@pytest.mark.parametrize("name", ["lora", "dora"])
def test_b_matrices_get_their_own_group_at_ratio_times_lr(name):
    model = tiny_classifier()
    report = methods.apply(model, method_cfg(name, {"loraplus_lr_ratio": 16}))
    assert "LoRA+: lora_B trains at train.lr x 16" in report.lines()
    cfg = TrainConfig(lr=1e-3, weight_decay=0.1)
    opt = build_optimizer(model, cfg, lr_scales=report.lr_scales)
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        group = group_of(opt, p)
        want_lr = 16e-3 if ".lora_B." in pname else 1e-3
        assert group["lr"] == pytest.approx(want_lr), pname
        assert group["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0), pname
    # the schedule scales every group alike, so the ratio holds at every step
    sched = build_scheduler(opt, cfg.model_copy(update={"warmup_steps": 4}), total=10)
    b = next(p for n, p in model.named_parameters() if ".lora_B." in n)
    a = next(p for n, p in model.named_parameters() if ".lora_A." in n)
    for _ in range(3):
        opt.step()
        sched.step()
        assert group_of(opt, b)["lr"] == pytest.approx(16 * group_of(opt, a)["lr"])


def test_without_the_ratio_the_groups_are_the_plain_two():
    model = tiny_classifier()
    report = methods.apply(model, method_cfg("lora", {}))
    assert report.lr_scales == {}
    opt = build_optimizer(model, TrainConfig(lr=1e-3))
    assert [(g["weight_decay"], g["lr"]) for g in opt.param_groups] == [(0.01, 1e-3), (0.0, 1e-3)]


def test_b_moves_more_than_under_plain_lora(tiny_model_dir, tiny_data, tmp_path):
    def b_and_a_norms(out: str, **method) -> tuple[float, float]:
        tree = tiny_config(tiny_model_dir, tiny_data, tmp_path / out, max_steps=6, eval_every=None,
                           lr=1e-3, warmup_ratio=0.0, schedule="constant",
                           load_best_at_end=False)
        tree["method"].update(method)
        train(validate(tree), log=lambda _: None)
        state = load_file(str(tmp_path / out / "adapter" / "adapter_model.safetensors"))
        b = sum(v.norm() ** 2 for k, v in state.items() if ".lora_B." in k) ** 0.5
        a = sum(v.norm() ** 2 for k, v in state.items() if ".lora_A." in k) ** 0.5
        return float(b), float(a)

    b_plain, a_plain = b_and_a_norms("plain")
    b_plus, a_plus = b_and_a_norms("plus", loraplus_lr_ratio=16)
    assert b_plain > 0  # B starts at 0, so its norm is how far it moved
    assert b_plus > 5 * b_plain
    assert a_plus == pytest.approx(a_plain, rel=0.05)  # A keeps the base rate


def test_ratio_below_one_is_refused():
    with pytest.raises(ConfigError, match="method.loraplus_lr_ratio: input should be greater than "
                                          "or equal to 1"):
        validate({"data": {"train": "x"}, "method": {"name": "lora", "loraplus_lr_ratio": 0.5}})
