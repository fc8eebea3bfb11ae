"""Runs on a quantized base (model.quantize) end to end: LoRA learns on a tiny Llama and a
tiny BERT classifier, `info` prints the base's bytes, `merge` writes a plain fp32 checkpoint,
and the combinations a quantized base cannot do are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from sft_fixtures import PAIRS, tiny_llama_dir

from tunelab.cli import main
from tunelab.config import validate
from tunelab.errors import ConfigError
from tunelab.recipes.run import train

pytestmark = pytest.mark.integration


def sft_tree(model: Path, data: Path, out: Path, scheme: str = "nf4") -> dict:
    return {"task": "causal_lm",
            "model": {"name": str(model), "max_length": 64, "quantize": scheme},
            "data": {"path": str(data), "eval_size": 4},
            "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
            "train": {"batch_size": 4, "lr": 5e-2, "max_steps": 20, "eval_every": 20,
                      "log_every": 10, "warmup_ratio": 0.0},
            "output_dir": str(out)}


@pytest.fixture(scope="module")
def nf4_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, list[str]]:
    root = tmp_path_factory.mktemp("qsft")
    rows = [{"instruction": q, "input": "", "output": a} for q, a in PAIRS * 6]
    data = root / "train.json"
    data.write_text(json.dumps(rows))
    model = tiny_llama_dir(root / "llama")
    log: list[str] = []
    summary = train(validate(sft_tree(model, data, root / "run")), log=log.append)
    plain = sft_tree(model, data, root / "fp32")
    del plain["model"]["quantize"]
    summary["fp32_final_loss"] = train(validate(plain), log=lambda _: None)["final_dev"]["loss"]
    return root / "run", model, summary, log


def test_lora_on_an_nf4_llama_learns_and_records_the_quantization(nf4_run):
    run, _, summary, log = nf4_run
    # LoRA r=4 on a random hidden-32 Llama moves the held-out loss from ~6.04 to ~5.7 in
    # 20 steps, fp32 or nf4 alike: the nf4 run must learn and land within 2% of the fp32 run
    assert summary["final_dev"]["loss"] < summary["initial_dev"]["loss"] - 0.25
    assert abs(summary["final_dev"]["loss"] / summary["fp32_final_loss"] - 1) < 0.02
    assert any(line.startswith("model.quantize: nf4 with double-quantized scales") for line in log)
    info = json.loads((run / "run.json").read_text())
    assert info["quantize"] == {"scheme": "nf4", "compute_dtype": "float32"}
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and "q_proj" in adapter["target_modules"]


def test_info_on_the_run_prints_the_base_bytes_before_and_after(nf4_run, capsys):
    run = nf4_run[0]
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("base model bytes:"))
    before, after = (int(n.replace(",", "")) for n in
                     (line.split(": ")[1].split(" before")[0], line.split(", ")[1].split(" after")[0]))
    assert after < before
    assert "kept in full precision: embeddings, lm_head" in out
    assert "matched modules (14)" in out


def test_merge_of_the_nf4_run_writes_a_plain_fp32_checkpoint(nf4_run, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from tunelab.runs.trained import load_trained

    run = nf4_run[0]
    assert main(["merge", str(run), str(tmp_path / "merged")]) == 0
    state = load_file(str(tmp_path / "merged" / "model.safetensors"))
    q = state["model.layers.0.self_attn.q_proj.weight"]
    assert q.dtype == torch.float32 and q.shape == (32, 32)
    assert not any("base_layer" in k or "lora" in k for k in state)
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    trained, _, _ = load_trained(run)  # the run as it trained: quantized base + adapter
    ids = torch.tensor([[1, 5, 9, 20, 31, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, trained(ids).logits, rtol=1e-4, atol=1e-4)


def test_lora_on_an_int8_minilm_classifier_learns(tiny_data, tmp_path):
    # the packaged MiniLM (a real pretrained BERT): LoRA on a random tiny BERT does not move
    # the toy task in a few steps, fp32 or quantized, so learning needs a real encoder
    tree = tiny_config("minilm", tiny_data, tmp_path / "run", max_steps=16, eval_every=16, lr=5e-3)
    tree["model"]["quantize"] = "int8"
    tree["method"]["targets"] = "all-linear"
    log: list[str] = []
    summary = train(validate(tree), log=log.append)
    assert summary["initial_dev"]["accuracy"] <= 0.6
    assert summary["final_dev"]["loss"] < 0.5 * summary["initial_dev"]["loss"]
    assert summary["final_dev"]["accuracy"] >= 0.9
    assert any("model.quantize: int8" in line for line in log)


def test_a_quantized_ner_run_reloads_on_its_quantized_base(tiny_model_dir, tmp_path):
    from ner_fixtures import ner_config, toy_ner_files

    from tunelab.models.quantize import QuantizedLinear
    from tunelab.runs.trained import load_trained

    tree = ner_config(tiny_model_dir, toy_ner_files(tmp_path), tmp_path / "run",
                      {"name": "lora", "r": 4, "targets": "all-linear"}, max_steps=4,
                      eval_every=4, checkpoint_every=4)
    tree["model"]["quantize"] = "nf4"
    summary = train(validate(tree), log=lambda _: None)
    assert summary["steps"] == 4
    model, _, info = load_trained(tmp_path / "run")
    assert info["quantize"]["scheme"] == "nf4"
    q_proj = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(q_proj.base_layer, QuantizedLinear)
    assert type(model.classifier) is torch.nn.Linear  # the head stays fp32 and trained


REFUSED = [
    ({"method": {"name": "full"}}, "method.name: full trains or saves the base weights"),
    ({"method": {"name": "bitfit"}}, "method.name: bitfit trains or saves the base weights"),
    ({"method": {"name": "freeze"}}, "method.name: freeze trains or saves the base weights"),
    ({"method": {"name": "loha"}}, "method.name: loha is not supported on a quantized base"),
    ({"method": {"name": "lora", "init": "pissa"}}, "method.init: pissa rewrites the base weight"),
    ({"train": {"distributed": "fsdp"}}, "train.distributed: fsdp"),
    ({"task": "masked_lm", "data": {"path": "x.txt"}}, "task: masked_lm runs cannot use a quantized"),
]


@pytest.mark.parametrize("change,message", REFUSED)
def test_unsupported_combinations_are_refused_by_name(change, message):
    tree = {"data": {"train": "x.tsv"}, "model": {"quantize": "nf4"}, **change}
    tree.setdefault("task", "classification")
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        validate(tree)


def test_compute_dtype_without_quantize_is_refused():
    with pytest.raises(ConfigError, match="model.compute_dtype.*set model.quantize"):
        validate({"data": {"train": "x.tsv"}, "model": {"compute_dtype": "bfloat16"}})
    with pytest.raises(ConfigError, match="model.quantize"):
        validate({"data": {"train": "x.tsv"}, "model": {"quantize": "int4"}})


def test_continual_refuses_a_quantized_base(tmp_path):
    from tunelab.continual.config import load_continual_config

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"quantize": "nf4"}, "stages": [
        {"name": "a", "data": {"train": "x.tsv"}}]}))
    with pytest.raises(ConfigError, match="model.quantize: tunelab continual does not train"):
        load_continual_config(str(path), [])


def test_a_missing_bitsandbytes_is_named_before_anything_loads(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install 'bitsandbytes>=0.50'"):
        validate({"data": {"train": "x.tsv"}, "model": {"quantize": "int8"}})
