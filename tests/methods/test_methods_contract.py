"""The contract every METHODS entry keeps, on a tiny in-process BERT classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tunelab import methods
from tunelab.config import validate
from tunelab.errors import AdapterError, MethodError
from tunelab.methods import METHODS
from tunelab.methods.base import adapter_layers
from tunelab.methods.lora import lora_layers
from tunelab.methods.peft_format import load_adapter, merge, save_adapter

VARIANTS = [("full", {}), ("freeze", {"train_last_layers": 1}), ("bitfit", {}),
            ("lora", {}), ("lora", {"init": "gaussian", "scaling": "rslora"}),
            ("lora", {"init": "pissa"}), ("lora", {"targets": "all-linear", "dropout": 0.1}),
            ("dora", {}), ("dora", {"init": "pissa", "targets": ["query", "value", "dense"]}),
            ("ia3", {}), ("ia3", {"targets": "all-linear", "feedforward": r".*\.output\.dense"}),
            ("vera", {"r": 8}), ("vera", {"r": 4, "targets": ["query", "value"], "dropout": 0.1,
                                          "d_initial": 0.05, "projection_seed": 3}),
            ("loha", {"r": 4}), ("loha", {"r": 2, "alpha": 6, "targets": ["query", "value"],
                                          "rank_dropout": 0.2, "module_dropout": 0.1}),
            ("lokr", {"r": 4}), ("lokr", {"r": 2, "decompose_both": True, "init": "lycoris",
                                          "targets": ["query", "value"], "rank_dropout": 0.2}),
            ("lokr", {"r": 8, "decompose_factor": 4, "rank_dropout_scale": True}),
            ("adalora", {"init_r": 4, "target_r": 2}),
            ("adalora", {"init_r": 6, "target_r": 3, "alpha": 16, "targets": ["query", "value"],
                         "dropout": 0.1, "orth_reg_weight": 0.1}),
            ("houlsby", {}), ("houlsby", {"reduction_factor": 4, "non_linearity": "tanh"}),
            ("pfeiffer", {}), ("pfeiffer", {"reduction_factor": 2, "targets": ["query", "value"],
                                            "non_linearity": "gelu"}),
            ("prompt_tuning", {}), ("prompt_tuning", {"num_virtual_tokens": 3, "init": "random"}),
            ("p_tuning", {"num_virtual_tokens": 5}),
            ("p_tuning", {"encoder": "lstm", "encoder_dropout": 0.1}),
            ("prefix_tuning", {"num_virtual_tokens": 6}),
            ("prefix_tuning", {"projection": True, "encoder_hidden_size": 16})]
# Prompt methods add virtual tokens (or a key/value prefix) that no init makes a no-op, and
# they change no weight, so the zero-init and merge checks do not apply to them.
PROMPT_METHODS = {"prompt_tuning", "p_tuning", "prefix_tuning"}
# the parameters each adapter method adds (the last part of their names)
ADAPTER_PARAMS = {"lora": ("lora_A.weight", "lora_B.weight"),
                  "dora": ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector"),
                  "ia3": ("ia3_l",), "vera": ("vera_lambda_b", "vera_lambda_d"),
                  "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
                  "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"),
                  "adalora": ("lora_A", "lora_E", "lora_B"),
                  "houlsby": ("adapter_down.weight", "adapter_down.bias", "adapter_up.weight",
                              "adapter_up.bias")}
ADAPTER_PARAMS["pfeiffer"] = ADAPTER_PARAMS["houlsby"]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items()) or 'default'}" for n, o in VARIANTS]
# methods that change weights; the prompt methods prepend virtual tokens instead, so no init
# leaves the output unchanged and nothing merges (test_prompts.py checks merge refuses them)
WEIGHT_VARIANTS = [(v, i) for v, i in zip(VARIANTS, IDS) if v[0] not in PROMPT_METHODS]


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


@pytest.mark.parametrize("name,opts", [v for v, _ in WEIGHT_VARIANTS],
                         ids=[i for _, i in WEIGHT_VARIANTS])
def test_zero_init_output_equals_base(name, opts):
    model = tiny_classifier()
    before = logits(model)
    methods.apply(model, method_cfg(name, opts))
    after = logits(model.eval())
    tol = 1e-5 if opts.get("init") == "pissa" else 0.0  # PiSSA re-splits W: float rounding only
    assert (after - before).abs().max().item() <= tol


@pytest.mark.parametrize("name,opts", [v for v, _ in WEIGHT_VARIANTS],
                         ids=[i for _, i in WEIGHT_VARIANTS])
def test_merged_equals_unmerged(name, opts):
    model = tiny_classifier()
    methods.apply(model, method_cfg(name, opts))
    perturb(model)
    unmerged = logits(model.eval())
    if not all(m.mergeable for m in adapter_layers(model).values()):
        with pytest.raises(AdapterError, match="cannot be merged into the base weights; load the "
                                               "run with its adapter instead"):
            merge(model)
        assert torch.equal(logits(model), unmerged)  # refused before touching the model
        return
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
    if name in PROMPT_METHODS:
        return pname.startswith("bert.prompt_encoder.")
    return pname.endswith(tuple("." + p for p in ADAPTER_PARAMS[name]))


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


# Adam learning rates for test_the_method_alone_fits_a_batch: scaling vectors need larger steps
FIT_LR = {"ia3": 0.1, "vera": 0.1, "p_tuning": 0.1, "prefix_tuning": 0.1}


@pytest.mark.parametrize("name,opts", [(n, o) for n, o in VARIANTS if METHODS[n].saves_adapter],
                         ids=[i for i, (n, _) in zip(IDS, VARIANTS) if METHODS[n].saves_adapter])
def test_the_method_alone_fits_a_batch(name, opts):
    """With the head frozen at a fixed random readout, only the method's parameters can lower
    the loss: 30 steps on one batch must lower it clearly (gradients reach them and help)."""
    model = tiny_classifier()
    methods.apply(model, method_cfg(name, opts))
    with torch.no_grad():
        torch.nn.init.normal_(model.classifier.weight, generator=torch.Generator().manual_seed(3))
    model.classifier.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=FIT_LR.get(name, 1e-2), weight_decay=0.0)
    labels = torch.tensor([0, 1, 2])
    if name in PROMPT_METHODS:
        # a frozen random readout of one pooled position barely separates three inputs through
        # virtual tokens (they drift to uniform, ln 3); instead all three must move to class 2,
        # which they do clearly (the loss at least halves)
        labels = torch.tensor([2, 2, 2])
    losses = []
    for _ in range(30):  # eval mode: no dropout noise in a 30-step check
        loss = model(**INPUT, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < (0.5 if name in PROMPT_METHODS else 0.95) * losses[0], losses[::5]


@pytest.mark.parametrize("name", sorted(PROMPT_METHODS))
def test_prompt_methods_change_the_output_from_the_start(name):
    """Virtual tokens are read from step 0: unlike zero-init adapters the output moves."""
    model = tiny_classifier()
    before = logits(model)
    methods.apply(model, method_cfg(name, {}))
    assert (logits(model.eval()) - before).abs().max().item() > 1e-4
