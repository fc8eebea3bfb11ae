"""DP-SGD on a quantized base (model.quantize + privacy): the per-example gradients of LoRA and
IA3 on top of QuantizedLinear layers are exact and clipped, as on the fp32 base."""

from __future__ import annotations

import pytest
from test_privacy import METHOD_CASES, check_per_example, hooked, private_tree

from tunelab import methods
from tunelab.models.quantize import QuantizedLinear, quantize_model


@pytest.mark.parametrize("method,scheme", [("lora", "nf4"), ("ia3", "int8")])
def test_per_example_gradients_on_a_quantized_base_are_exact(
        tiny_model_dir, tiny_data, tmp_path, monkeypatch, method, scheme):
    real_apply = methods.apply

    def quantize_then_apply(model, cfg):  # what recipes.run.build_run does before the method
        quantize_model(model, scheme)
        return real_apply(model, cfg)

    monkeypatch.setattr(methods, "apply", quantize_then_apply)
    tree = private_tree(tiny_model_dir, tiny_data, tmp_path / "r", {"noise_multiplier": 0.0})
    tree["method"] = METHOD_CASES[method]
    tree["model"]["quantize"] = scheme
    s, engine = hooked(tree, clip=1e-3)
    assert any(isinstance(m, QuantizedLinear) for m in s.model.modules())
    check_per_example(s, engine, [0, 5, 17, 40, 63], clip=1e-3)
