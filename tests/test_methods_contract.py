"""The contract every METHODS entry keeps, on a tiny in-process BERT classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tunelab import methods
from tunelab.config import validate
from tunelab.errors import MethodError
from tunelab.methods import METHODS
from tunelab.methods.base import adapter_layers
from tunelab.methods.lora import lora_layers
from tunelab.methods.peft_format import load_adapter, merge, save_adapter

VARIANTS = [("full", {}), ("freeze", {"train_last_layers": 1}), ("bitfit", {}),
            ("lora", {}), ("lora", {"init": "gaussian", "scaling": "rslora"}),
            ("lora", {"init": "pissa"}), ("lora", {"targets": "all-linear", "dropout": 0.1}),
            ("dora", {}), ("dora", {"init": "pissa", "targets": ["query", "value", "dense"]})]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o in VARIANTS]


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=3, max_position_embeddings=64)
    return BertForSequenceClassification(cfg).eval()


def method_cfg(name: str, opts: dict):
    tree = {"data": {"train": "x"}, "method": {"name": name, **opts}}
    if name in ("lora", "dora") and "targets" not in opts:
        tree["method"]["targets"] = ["query", "value"]
    return validate(tree).method


INPUT = {"input_ids": torch.randint(1, 120, (3, 11), generator=torch.Generator().manual_seed(1)),
         "attention_mask": torch.ones(3, 11, dtype=torch.long)}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(**INPUT).logits


def perturb(model) -> None:
    """Move every trainable parameter, so later checks see a non-trivial trained state."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_every_method_is_covered():
    assert {n for n, _ in VARIANTS} == set(METHODS)


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_zero_init_output_equals_base(name, opts):
    model = tiny_classifier()
    before = logits(model)
    methods.apply(model, method_cfg(name, opts))
    after = logits(model.eval())
    tol = 1e-5 if opts.get("init") == "pissa" else 0.0  # PiSSA re-splits W: float rounding only
    assert (after - before).abs().max().item() <= tol


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_merged_equals_unmerged(name, opts):
    model = tiny_classifier()
    methods.apply(model, method_cfg(name, opts))
    perturb(model)
    unmerged = logits(model.eval())
    merge(model)
    assert not adapter_layers(model)
    assert torch.allclose(logits(model), unmerged, atol=1e-5, rtol=0)  # stated tolerance: 1e-5


def expected_trainable(name: str, opts: dict, pname: str) -> bool:
    if pname.startswith("classifier."):
        return True
    if name == "full":
        return True
    if name == "freeze":
        return pname.startswith("bert.encoder.layer.1.")
    if name == "bitfit":
        return pname.endswith(".bias")
    return ".lora_A." in pname or ".lora_B." in pname or (
        name == "dora" and pname.endswith("lora_magnitude_vector"))


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_only_the_intended_parameters_train(name, opts):
    model = tiny_classifier()
    methods.apply(model, method_cfg(name, opts))
    wrong = [n for n, p in model.named_parameters()
             if p.requires_grad != expected_trainable(name, opts, n)]
    assert wrong == []


@pytest.mark.parametrize("name,opts", VARIANTS, ids=IDS)
def test_save_then_load_gives_identical_outputs(name, opts, tmp_path: Path):
    model = tiny_classifier()
    cfg = method_cfg(name, opts)
    report = methods.apply(model, cfg)
    perturb(model)
    want = logits(model.eval())
    fresh = tiny_classifier(seed=123)  # a different head init: loading must overwrite it
    if METHODS[name].saves_adapter:
        save_adapter(model, cfg, report.head, "tiny", tmp_path)
        torch.manual_seed(0)
        fresh = tiny_classifier()  # same base weights, fresh head
        with torch.no_grad():
            fresh.classifier.weight.zero_()
        load_adapter(fresh, tmp_path, ["classifier"])
    else:
        model.save_pretrained(tmp_path)
        fresh = BertForSequenceClassification.from_pretrained(tmp_path)
    assert torch.allclose(logits(fresh.eval()), want, atol=1e-6, rtol=0)


def test_no_target_match_lists_closest_linear_names():
    model = tiny_classifier()
    with pytest.raises(MethodError) as exc:
        methods.apply(model, method_cfg("lora", {"targets": ["qeury"]}))
    assert str(exc.value) == (
        "method.targets: no Linear layer matches 'qeury'; closest Linear names: query, key "
        "(all Linear names: dense, key, query, value; or use 'all-linear')")


def test_target_forms_name_suffix_regex_all_linear():
    def chosen(targets):
        model = tiny_classifier()
        return methods.apply(model, method_cfg("lora", {"targets": targets})).matched

    assert chosen(["query"]) == [f"bert.encoder.layer.{i}.attention.self.query" for i in (0, 1)]
    assert chosen(["layer.1.attention.self.query"]) == ["bert.encoder.layer.1.attention.self.query"]
    assert chosen(r".*\.1\.attention\.self\.(key|value)") == [
        "bert.encoder.layer.1.attention.self.key", "bert.encoder.layer.1.attention.self.value"]
    all_linear = chosen("all-linear")
    assert len(all_linear) == 2 * 6 + 1 and "classifier" not in all_linear  # + pooler.dense


def test_freeze_rejects_more_layers_than_the_model_has():
    with pytest.raises(MethodError, match="train_last_layers: 3 is more than the model's 2 layers"):
        methods.apply(tiny_classifier(), method_cfg("freeze", {"train_last_layers": 3}))


def test_rslora_scaling_value():
    model = tiny_classifier()
    methods.apply(model, method_cfg("lora", {"r": 4, "alpha": 8, "scaling": "rslora"}))
    layer = next(iter(lora_layers(model).values()))
    assert layer.scaling == pytest.approx(8 / 2)  # alpha / sqrt(r)


def test_pissa_takes_the_top_singular_directions():
    base = tiny_classifier().bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    model = tiny_classifier()
    methods.apply(model, method_cfg("lora", {"r": 2, "alpha": 4, "init": "pissa"}))
    layer = lora_layers(model)["bert.encoder.layer.0.attention.self.query"]
    u, s, vh = torch.linalg.svd(base)
    top = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]
    assert torch.allclose(layer.delta_weight(), top, atol=1e-5)
    assert torch.allclose(layer.weight, base - top, atol=1e-5)
