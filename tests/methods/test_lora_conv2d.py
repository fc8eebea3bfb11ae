"""LoRA on nn.Conv2d (tunelab/methods/lora_conv.py): exact at zero init and after merging, and
interchangeable with peft's LoraConv2d both ways on a tiny random ResNet and ViT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from tunelab import methods
from tunelab.errors import MethodError
from tunelab.methods.lora_conv import LoraConv2d
from tunelab.methods.peft_format import load_adapter, merge, save_adapter

from test_methods_contract import method_cfg, perturb

PIXELS = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def tiny_resnet(seed: int = 0) -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                       layer_type="basic", num_labels=4)
    return ResNetForImageClassification(cfg).eval()


def tiny_vit(seed: int = 0) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=4)
    return ViTForImageClassification(cfg).eval()


def tiny_convnext(seed: int = 0) -> nn.Module:
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(seed)
    cfg = ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                         num_labels=4, patch_size=2)
    return ConvNextForImageClassification(cfg).eval()


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=PIXELS).logits


# case: (model builder, tunelab targets, target_modules written to adapter_config.json)
CASES = {"resnet": (tiny_resnet, ["convolution"], ["convolution"]),
         "vit": (tiny_vit, ["projection", "q_proj", "v_proj"], ["projection", "q_proj", "v_proj"]),
         "convnext": (tiny_convnext, r".*(patch_embeddings|downsampling_layer\.1)", None)}


def ours(case: str):
    build, targets, _ = CASES[case]
    model = build()
    cfg = method_cfg("lora", {"r": 4, "alpha": 8, "targets": targets})
    report = methods.apply(model, cfg)
    return model, cfg, report


@pytest.mark.parametrize("case", list(CASES))
def test_zero_init_and_merge_are_exact(case):
    base = logits(CASES[case][0]())
    model, _, report = ours(case)
    assert any(isinstance(m, LoraConv2d) for m in model.modules()), report.matched
    assert torch.allclose(logits(model), base, atol=1e-6, rtol=0)  # B = 0: the base's output
    perturb(model)
    adapted = logits(model)
    assert not torch.allclose(adapted, base, atol=1e-3)
    merge(model)
    assert not any(isinstance(m, LoraConv2d) for m in model.modules())
    assert torch.allclose(logits(model), adapted, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_tunelab_adapter_loads_in_peft(case, tmp_path: Path):
    model, cfg, report = ours(case)
    perturb(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path, task="image_classification")
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    if CASES[case][2] is not None:
        assert written["target_modules"] == CASES[case][2]
    assert written["task_type"] is None and written["modules_to_save"] == ["classifier"]
    loaded = PeftModel.from_pretrained(CASES[case][0](), tmp_path).eval()
    convs = [m for m in loaded.modules() if type(m).__name__ == "Conv2d"
             and type(m).__module__.startswith("peft")]
    assert convs  # peft built its own LoraConv2d layers from our config
    assert torch.allclose(logits(loaded), logits(model.eval()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_peft_adapter_loads_in_tunelab(case, tmp_path: Path):
    build, targets, _ = CASES[case]
    theirs = get_peft_model(build(), PeftLoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                    modules_to_save=["classifier"])).eval()
    perturb(theirs)
    theirs.save_pretrained(tmp_path)
    model = build()
    report = load_adapter(model, tmp_path, ["classifier"])
    assert any(isinstance(model.get_submodule(n), LoraConv2d) for n in report.matched)
    assert torch.allclose(logits(model.eval()), logits(theirs), atol=1e-5, rtol=0)


def test_all_linear_leaves_convolutions_alone():
    model = tiny_vit()
    methods.apply(model, method_cfg("lora", {"targets": "all-linear"}))
    assert not any(isinstance(m, LoraConv2d) for m in model.modules())


def test_resnet_all_linear_names_the_convolutions():
    with pytest.raises(MethodError, match="no Linear or Conv2d layer matches.*convolution"):
        methods.apply(tiny_resnet(), method_cfg("lora", {"targets": "all-linear"}))


@pytest.mark.parametrize("opts, message", [
    ({"targets": ["dwconv"]}, "grouped Conv2d .*dwconv.*leave it out"),
])
def test_grouped_convolution_is_refused(opts, message):
    with pytest.raises(MethodError, match=message):
        methods.apply(tiny_convnext(), method_cfg("lora", opts))


@pytest.mark.parametrize("name, opts, message", [
    ("dora", {}, "is a Conv2d; dora supports Linear layers only"),
    ("lora", {"init": "pissa"}, "is a Conv2d; init: pissa supports Linear layers only"),
])
def test_linear_only_variants_refuse_convolutions(name, opts, message):
    with pytest.raises(MethodError, match=message):
        methods.apply(tiny_resnet(), method_cfg(name, {"targets": ["convolution"], **opts}))
