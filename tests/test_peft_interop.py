"""Interop with the real `peft` package: same weights, same logits; adapters load both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model

from tunelab import methods
from tunelab.methods.peft_format import load_adapter, save_adapter

from test_methods_contract import logits, method_cfg, perturb, tiny_classifier

CASES = {"lora": ("lora", {}, {}),
         "rslora": ("lora", {"scaling": "rslora"}, {"use_rslora": True}),
         "dora": ("dora", {}, {"use_dora": True}),
         "dora-all-linear": ("dora", {"targets": "all-linear"}, {"use_dora": True,
                                                                 "target_modules": "all-linear"})}

def peft_model(extra: dict, seed: int = 0):
    kwargs = {"task_type": "SEQ_CLS", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
              "target_modules": ["query", "value"], **extra}
    return get_peft_model(tiny_classifier(seed), PeftLoraConfig(**kwargs)).eval()

def ours(name: str, opts: dict):
    model = tiny_classifier()
    cfg = method_cfg(name, {"r": 4, "alpha": 8, **opts})
    report = methods.apply(model, cfg)
    return model, cfg, report

@pytest.mark.parametrize("case", list(CASES))
def test_identical_weights_give_identical_logits(case):
    name, opts, extra = CASES[case]
    model, _, _ = ours(name, opts)
    perturb(model)
    theirs = peft_model(extra)
    ours_state = model.state_dict()
    with torch.no_grad():
        for key, p in theirs.named_parameters():
            if ".lora_" in key or "modules_to_save" in key:
                plain = (key.removeprefix("base_model.model.").replace(".default", "")
                         .replace("modules_to_save.", "").replace("lora_magnitude_vector.weight",
                                                                  "lora_magnitude_vector"))
                p.copy_(ours_state[plain])
    assert torch.allclose(logits(theirs), logits(model.eval()), atol=1e-5, rtol=0)

@pytest.mark.parametrize("case", list(CASES))
def test_tunelab_adapter_loads_in_peft(case, tmp_path: Path):
    name, opts, _ = CASES[case]
    model, cfg, report = ours(name, opts)
    perturb(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written["target_modules"] == (["dense", "key", "query", "value"]
                                         if opts.get("targets") == "all-linear" else ["query", "value"])
    assert written["modules_to_save"] == ["classifier"]
    loaded = PeftModel.from_pretrained(tiny_classifier(), tmp_path).eval()
    assert torch.allclose(logits(loaded), logits(model.eval()), atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CASES))
def test_peft_adapter_loads_in_tunelab(case, tmp_path: Path):
    _, _, extra = CASES[case]
    theirs = peft_model(extra)
    perturb(theirs)
    theirs.save_pretrained(tmp_path)
    model = tiny_classifier()
    report = load_adapter(model, tmp_path, ["classifier"])
    assert report.matched  # layers were injected from adapter_config.json's target_modules
    assert torch.allclose(logits(model.eval()), logits(theirs), atol=1e-5, rtol=0)

def test_pissa_adapter_is_written_against_the_original_base(tmp_path: Path):
    """PiSSA changes the base weight; the saved adapter must still apply to the untouched base."""
    model, cfg, report = ours("lora", {"init": "pissa", "r": 2})
    perturb(model)
    save_adapter(model, cfg, report.head, "tiny", tmp_path)
    loaded = PeftModel.from_pretrained(tiny_classifier(), tmp_path).eval()
    assert loaded.peft_config["default"].r == 4
    assert torch.allclose(logits(loaded), logits(model.eval()), atol=1e-4, rtol=0)

def test_unsupported_adapter_config_is_refused(tmp_path: Path):
    from tunelab.errors import AdapterError

    theirs = peft_model({"rank_pattern": {"query": 2}})
    theirs.save_pretrained(tmp_path)
    with pytest.raises(AdapterError, match="rank_pattern=.* is not supported"):
        load_adapter(tiny_classifier(), tmp_path, ["classifier"])

def test_adapter_for_another_base_is_refused(tmp_path: Path):
    from tunelab.errors import AdapterError

    theirs = peft_model({"r": 8})
    theirs.save_pretrained(tmp_path)
    (tmp_path / "adapter_config.json").write_text(
        (tmp_path / "adapter_config.json").read_text().replace('"r": 8', '"r": 4'))
    with pytest.raises(AdapterError, match=r"lora_A.weight has shape \(8, 32\), the model expects "
                                           r"\(4, 32\); wrong base model or r\?"):
        load_adapter(tiny_classifier(), tmp_path, ["classifier"])
