"""LoRA, DoRA, IA3 and VeRA on a quantized base (model.quantize): the adapter layer sits on
the QuantizedLinear, starts as the quantized base, merges into plain fp32 Linear layers,
and its adapter file loads on the full-precision base in tunelab and in peft."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel
from torch import nn

from tunelab import methods
from tunelab.config import validate
from tunelab.errors import MethodError
from tunelab.methods.peft_format import load_adapter, merge, save_adapter
from tunelab.models.quantize import QuantizedLinear, quantize_model, quantized_layers

IDS = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(3))
OPTIONS = {"lora": {"r": 4, "alpha": 8}, "dora": {"r": 4, "alpha": 8}, "ia3": {},
           "vera": {"r": 8}}


def tiny_llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, max_position_embeddings=64)).eval()


def method_cfg(name: str, scheme: str, **extra):
    tree = {"task": "causal_lm", "data": {"path": "x.json"}, "model": {"quantize": scheme},
            "method": {"name": name, **OPTIONS[name], **extra}}
    return validate(tree).method


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def trained(model: nn.Module) -> None:
    """Move every trainable tensor, as training would (zero-init factors become non-zero)."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", ["lora", "dora", "ia3", "vera"])
def test_method_starts_as_the_quantized_base_and_merges_into_fp32(name):
    model = tiny_llama()
    quantize_model(model, "nf4")
    base = logits(model)
    report = methods.apply(model, method_cfg(name, "nf4"))
    assert report.matched
    layer = model.get_submodule(report.matched[0])
    assert isinstance(layer.base_layer, QuantizedLinear)  # the adapter sits on the quantized layer
    torch.testing.assert_close(logits(model), base, rtol=0, atol=1e-6)
    model.train()
    model(IDS).logits.pow(2).mean().backward()
    grads = [n for n, p in model.named_parameters() if p.requires_grad]
    assert grads and all(model.get_parameter(n).grad is not None for n in grads)
    model.zero_grad()
    trained(model)
    model.eval()
    before = logits(model)
    merge(model)
    assert not quantized_layers(model)  # untargeted quantized layers are dequantized too
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("proj"))
    torch.testing.assert_close(logits(model), before, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,scheme", [("lora", "nf4"), ("lora", "int8"), ("dora", "nf4"),
                                         ("ia3", "nf4"), ("vera", "int8")])
def test_adapter_from_a_quantized_base_loads_on_the_fp32_base_in_peft_and_tunelab(
        name, scheme, tmp_path):
    fp32 = tiny_llama()
    quantized = copy.deepcopy(fp32)
    quantize_model(quantized, scheme)
    base_gap = rel(logits(quantized), logits(fp32))  # what quantization alone changes
    cfg = method_cfg(name, scheme)
    methods.apply(quantized, cfg)
    trained(quantized)
    ours = logits(quantized)
    out = save_adapter(quantized, cfg, [], "tiny-llama", tmp_path / "adapter", task="causal_lm")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(fp32), str(out)).eval()
    theirs = logits(peft_model)
    # on the fp32 base the outputs differ from the quantized run by about what quantization
    # changed in the base itself (the adapter is small next to the base)
    assert rel(theirs, ours) < 1.5 * base_gap + 1e-3, (rel(theirs, ours), base_gap)
    mine = copy.deepcopy(fp32)
    load_adapter(mine, out, [])  # tunelab on the fp32 base: same keys, same layers as peft
    torch.testing.assert_close(logits(mine), theirs, rtol=1e-4, atol=1e-5)
    again = copy.deepcopy(fp32)
    quantize_model(again, scheme)  # and on the quantized base (a finished run reloading)
    load_adapter(again, out, [])
    torch.testing.assert_close(logits(again), ours, rtol=1e-4, atol=1e-5)


def test_adapter_keys_are_the_fp32_keys():

    plain, quantized = tiny_llama(), tiny_llama()
    quantize_model(quantized, "nf4")
    keys = []
    for model in (plain, quantized):
        methods.apply(model, method_cfg("lora", "nf4", targets="all-linear"))
        keys.append(sorted(k for k, p in model.named_parameters() if p.requires_grad))
    assert keys[0] == keys[1] and "model.layers.0.self_attn.q_proj.lora_A.weight" in keys[0]


def test_pissa_is_refused_on_a_quantized_layer():
    from tunelab.config import load_config

    model = tiny_llama()
    quantize_model(model, "nf4")
    cfg = load_config(None, ["task=causal_lm", "data.path=x.json", "method.init=pissa",
                             "method.targets=[q_proj]"])
    with pytest.raises(MethodError, match="pissa.*model.quantize"):
        methods.apply(model, cfg.method)


def test_head_trains_in_full_precision_on_a_quantized_classifier(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=3)).eval()
    fp32 = copy.deepcopy(model)
    quantize_model(model, "int8")
    cfg = validate({"data": {"train": "x"}, "model": {"quantize": "int8"},
                    "method": {"name": "lora", "r": 4, "targets": ["query", "value"]}}).method
    report = methods.apply(model, cfg)
    assert report.head == ["classifier"] and model.classifier.weight.requires_grad
    trained(model)
    out = save_adapter(model, cfg, report.head, "tiny-bert", tmp_path / "a")
    peft_model = PeftModel.from_pretrained(copy.deepcopy(fp32), str(out)).eval()
    with torch.no_grad():
        ours, theirs = model(IDS).logits, peft_model(IDS).logits
    assert rel(theirs, ours) < 0.05  # int8's error is < 1% per layer


def test_two_adapters_share_a_quantized_base(tmp_path):
    from tunelab.methods.multi_adapter import load_named_adapter, set_adapter

    want, dirs = [], []
    for seed in (1, 2):
        model = tiny_llama()
        quantize_model(model, "nf4")
        cfg = method_cfg("lora", "nf4")
        methods.apply(model, cfg)
        torch.manual_seed(seed)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.normal_(std=0.1)
        want.append(logits(model))
        dirs.append(save_adapter(model, cfg, [], "tiny-llama", tmp_path / f"a{seed}",
                                 task="causal_lm"))
    shared = tiny_llama()
    quantize_model(shared, "nf4")
    for name, path in zip(("one", "two"), dirs):
        load_named_adapter(shared, name, path)
    for name, expected in zip(("one", "two"), want):
        set_adapter(shared, name)
        torch.testing.assert_close(logits(shared), expected, rtol=1e-4, atol=1e-5)
