"""Interop with the real `peft` package: same weights, same logits; adapters load both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import IA3Config as PeftIA3Config
from peft import LoHaConfig as PeftLohaConfig
from peft import LoKrConfig as PeftLokrConfig
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft import VeraConfig as PeftVeraConfig

from tunelab import methods
from tunelab.methods.peft_format import load_adapter, save_adapter

from test_methods_contract import logits, method_cfg, perturb, tiny_classifier

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"]}
OURS_LORA = {"r": 4, "alpha": 8}
FF_REGEX = r".*\.output\.dense"
# case: (tunelab method, its options, peft config class, its kwargs, target_modules we write)
CASES = {
    "lora": ("lora", OURS_LORA, PeftLoraConfig, LORA, ["query", "value"]),
    "rslora": ("lora", {**OURS_LORA, "scaling": "rslora"}, PeftLoraConfig,
               {**LORA, "use_rslora": True}, ["query", "value"]),
    "dora": ("dora", OURS_LORA, PeftLoraConfig, {**LORA, "use_dora": True}, ["query", "value"]),
    "dora-all-linear": ("dora", {**OURS_LORA, "targets": "all-linear"}, PeftLoraConfig,
                        {**LORA, "use_dora": True, "target_modules": "all-linear"},
                        ["dense", "key", "query", "value"]),
    "ia3": ("ia3", {}, PeftIA3Config, {}, None),  # both sides use peft's BERT defaults
    "ia3-all-linear": ("ia3", {"targets": "all-linear", "feedforward": FF_REGEX}, PeftIA3Config,
                       {"target_modules": "all-linear", "feedforward_modules": FF_REGEX}, None),
    "ia3-names": ("ia3", {"targets": ["query", "intermediate.dense"],
                          "feedforward": ["intermediate.dense"]},
                  PeftIA3Config, {"target_modules": ["query", "intermediate.dense"],
                                  "feedforward_modules": ["intermediate.dense"]}, None),
    "vera": ("vera", {"r": 4, "targets": ["query", "value"]}, PeftVeraConfig,
             {"r": 4, "target_modules": ["query", "value"]}, ["query", "value"]),
    "vera-all-linear": ("vera", {"r": 8, "targets": "all-linear", "d_initial": 0.05,
                                 "projection_seed": 7}, PeftVeraConfig,
                        {"r": 8, "target_modules": "all-linear", "d_initial": 0.05,
                         "projection_prng_key": 7}, ["dense", "key", "query", "value"]),
    "loha": ("loha", {"r": 4, "alpha": 8, "targets": ["query", "value"]}, PeftLohaConfig,
             {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}, ["query", "value"]),
    "loha-all-linear": ("loha", {"r": 2, "alpha": 6}, PeftLohaConfig,
                        {"r": 2, "alpha": 6, "target_modules": "all-linear"},
                        ["dense", "key", "query", "value"]),
    "lokr": ("lokr", {"r": 4, "alpha": 8, "targets": ["query", "value"]}, PeftLokrConfig,
             {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}, ["query", "value"]),
    "lokr-decomposed": ("lokr", {"r": 1, "alpha": 3, "decompose_both": True}, PeftLokrConfig,
                        {"r": 1, "alpha": 3, "decompose_both": True, "target_modules": "all-linear"},
                        None),
    "lokr-factor": ("lokr", {"r": 8, "decompose_factor": 4, "init": "lycoris"}, PeftLokrConfig,
                    {"r": 8, "decompose_factor": 4, "init_weights": "lycoris",
                     "target_modules": "all-linear"}, None),
}


def peft_model(cls, kwargs: dict, seed: int = 0):
    return get_peft_model(tiny_classifier(seed), cls(task_type="SEQ_CLS", **kwargs)).eval()


def ours(name: str, opts: dict):
    model = tiny_classifier()
    cfg = method_cfg(name, opts)
    report = methods.apply(model, cfg)
    return model, cfg, report


def plain_key(peft_key: str) -> str:
    """peft's parameter name inside a PeftModel -> ours inside the plain model."""
    return (peft_key.removeprefix("base_model.model.").replace(".default", "")
            .replace("modules_to_save.", "").replace("lora_magnitude_vector.weight",
                                                     "lora_magnitude_vector"))


@pytest.mark.parametrize("case", list(CASES))
def test_identical_weights_give_identical_logits(case):
    name, opts, cls, kwargs, _ = CASES[case]
    model, _, _ = ours(name, opts)
    perturb(model)
    theirs = peft_model(cls, kwargs)
    ours_state = model.state_dict()
    theirs_trainable = {plain_key(k) for k, p in theirs.named_parameters() if p.requires_grad}
    assert theirs_trainable == {k for k, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for key, p in theirs.named_parameters():
            if p.requires_grad:
                p.copy_(ours_state[plain_key(key)])
    assert torch.allclose(logits(theirs), logits(model.eval()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_tunelab_adapter_loads_in_peft(case, tmp_path: Path):
    name, opts, _, _, targets = CASES[case]
    model, cfg, report = ours(name, opts)
    perturb(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    if targets is not None:
        assert written["target_modules"] == targets
    assert written["modules_to_save"] == ["classifier"]
    loaded = PeftModel.from_pretrained(tiny_classifier(), tmp_path).eval()
    assert torch.allclose(logits(loaded), logits(model.eval()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_peft_adapter_loads_in_tunelab(case, tmp_path: Path):
    _, _, cls, kwargs, _ = CASES[case]
    theirs = peft_model(cls, kwargs)
    perturb(theirs)
    theirs.save_pretrained(tmp_path)
    model = tiny_classifier()
    report = load_adapter(model, tmp_path, ["classifier"])
    assert report.matched  # layers were injected from adapter_config.json's target_modules
    assert torch.allclose(logits(model.eval()), logits(theirs), atol=1e-5, rtol=0)

def test_pissa_adapter_is_written_against_the_original_base(tmp_path: Path):
    """PiSSA changes the base weight; the saved adapter must still apply to the untouched base."""
    model, cfg, report = ours("lora", {"init": "pissa", "r": 2, "alpha": 8})
    perturb(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    loaded = PeftModel.from_pretrained(tiny_classifier(), tmp_path).eval()
    assert loaded.peft_config["default"].r == 4
    assert torch.allclose(logits(loaded), logits(model.eval()), atol=1e-4, rtol=0)

def test_unsupported_adapter_config_is_refused(tmp_path: Path):
    from tunelab.errors import AdapterError

    theirs = peft_model(PeftLoraConfig, {**LORA, "alpha_pattern": {"query": 2}})
    theirs.save_pretrained(tmp_path)
    with pytest.raises(AdapterError, match="alpha_pattern=.* is not supported"):
        load_adapter(tiny_classifier(), tmp_path, ["classifier"])

def test_adapter_for_another_base_is_refused(tmp_path: Path):
    from tunelab.errors import AdapterError

    theirs = peft_model(PeftLoraConfig, {**LORA, "r": 8})
    theirs.save_pretrained(tmp_path)
    (tmp_path / "adapter_config.json").write_text(
        (tmp_path / "adapter_config.json").read_text().replace('"r": 8', '"r": 4'))
    with pytest.raises(AdapterError, match=r"lora_A.weight has shape \(8, 32\), the model expects "
                                           r"\(4, 32\); wrong base model or r\?"):
        load_adapter(tiny_classifier(), tmp_path, ["classifier"])


@pytest.mark.parametrize("edit,message", [
    ({"layers_to_transform": 0}, "layers_to_transform=0 is not supported by tunelab yet"),
    ({"peft_type": "BOFT"}, r"peft_type 'BOFT' is not supported \(tunelab loads ADALORA, IA3, "
                            r"LOHA, LOKR, LORA, PREFIX_TUNING, PROMPT_TUNING, P_TUNING, VERA "
                            r"adapters\)"),
    ({"r": None}, r"adapter_config.json: r: input should be a valid integer \(got None\)"),
], ids=["layers_to_transform", "peft_type", "bad-value"])
def test_adapter_configs_we_cannot_honour_are_refused_by_key(edit, message, tmp_path: Path):
    from tunelab.errors import AdapterError

    peft_model(PeftLoraConfig, LORA).save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(AdapterError, match=message):
        load_adapter(tiny_classifier(), tmp_path, ["classifier"])
