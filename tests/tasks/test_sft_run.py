"""Causal LM runs end to end on a tiny in-process Llama: learning, packing, generation, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sft_fixtures import PAIRS, tiny_llama_dir
from tunelab.cli import main
from tunelab.config import validate
from tunelab.recipes.run import train

pytestmark = pytest.mark.integration  # end-to-end runs through the CLI or `train`


@pytest.fixture
def sft_setup(tmp_path) -> tuple[Path, Path]:
    rows = [{"instruction": q, "input": "", "output": a} for q, a in PAIRS * 6]
    data = tmp_path / "train.json"
    data.write_text(json.dumps(rows))
    return tiny_llama_dir(tmp_path / "llama"), data


def config(model: Path, data: Path, out: Path, **data_opts) -> dict:
    return {"task": "causal_lm", "model": {"name": str(model), "max_length": 64},
            "data": {"path": str(data), "eval_size": 4, "samples": 1, "sample_tokens": 8,
                     **data_opts},
            "method": {"name": "full"},
            "train": {"batch_size": 4, "lr": 1e-2, "max_steps": 40, "eval_every": 20,
                      "log_every": 5, "warmup_ratio": 0.0},
            "output_dir": str(out)}


@pytest.mark.parametrize("packing", [False, True])
def test_tiny_sft_lowers_held_out_loss(sft_setup, tmp_path, packing):
    model, data = sft_setup
    summary = train(validate(config(model, data, tmp_path / "run", packing=packing)),
                    log=lambda _: None)
    assert summary["final_dev"]["loss"] < 0.5 * summary["initial_dev"]["loss"]
    assert summary["final_dev"]["perplexity"] < summary["initial_dev"]["perplexity"]
    samples = sorted((tmp_path / "run" / "samples").glob("step-*.jsonl"))
    assert [p.name for p in samples] == ["step-0000000.jsonl", "step-0000020.jsonl",
                                         "step-0000040.jsonl"]
    first = json.loads(samples[-1].read_text().splitlines()[0])
    assert first["prompt"].endswith("<|im_start|>assistant\n") and "response" in first


def test_lora_sft_saves_a_causal_lm_adapter_that_generates(sft_setup, tmp_path, capsys):
    model, data = sft_setup
    tree = config(model, data, tmp_path / "run")
    tree["method"] = {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"}
    tree["train"]["lr"] = 2e-2
    summary = train(validate(tree), log=lambda _: None)
    assert summary["final_dev"]["loss"] < summary["initial_dev"]["loss"]
    adapter = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert adapter["task_type"] == "CAUSAL_LM" and adapter["modules_to_save"] is None
    assert "lm_head" not in adapter["target_modules"]  # all-linear spares the output layer
    prompts = tmp_path / "in.jsonl"
    prompts.write_text(json.dumps({"prompt": "say one"}) + "\n"
                       + json.dumps({"messages": [{"role": "user", "content": "say fox"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["generate", str(tmp_path / "run"), "--file", str(prompts), "--out", str(out),
                 "--max-new-tokens", "6"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r.get("prompt") for r in rows] == ["say one", None]
    assert all(isinstance(r["response"], str) for r in rows)
    base = main(["generate", str(model), "--prompt", "say one", "--max-new-tokens", "4"])
    assert base == 0  # the base model alone generates too


def test_data_inspect_marks_trained_tokens(sft_setup, tmp_path, capsys):
    import yaml

    model, data = sft_setup
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(model, data, tmp_path / "run")))
    assert main(["data", "inspect", str(path), "-n", "1", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "<|im_start|>assistant\n[[" in out and "<|im_end|>]]" in out
    assert "examples: 20 read, 20 kept" in out and "length histogram (tokens):" in out


def test_chat_streams_and_resets(sft_setup, capsys):
    import io

    from tunelab.commands.generate import chat

    model, _ = sft_setup
    chat(str(model), None, 4, 0.0, stdin=io.StringIO("say one\n/reset\nsay fox\n/exit\n"))
    out = capsys.readouterr().out
    assert out.count("> ") == 4 and "(conversation cleared)" in out


def test_gpt2_style_model_continued_pretraining_on_text(tmp_path):
    """A GPT-2 architecture (no chat template needed) on plain text, EOS appended and trained."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from sft_fixtures import CORPUS, tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                     eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS * 5))
    tree = config(tmp_path / "gpt2", data, tmp_path / "run")
    summary = train(validate(tree), log=lambda _: None)  # full fine-tuning
    assert summary["final_dev"]["loss"] < 0.8 * summary["initial_dev"]["loss"]


def test_lora_on_gpt2_conv1d_merges_and_loads_in_peft(tmp_path):
    from sft_fixtures import assert_conv1d_adapter_roundtrip, tiny_gpt2
    from tunelab import methods

    model = tiny_gpt2()
    cfg = validate({"data": {"train": "x"}, "method": {"name": "lora", "r": 4,
                                                       "targets": ["c_attn", "c_proj"]}}).method
    methods.apply(model, cfg)
    assert_conv1d_adapter_roundtrip(model, cfg, tmp_path / "ad")


def test_eval_and_merge_of_a_causal_lm_run(sft_setup, tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.runs.trained import load_trained

    model, data = sft_setup
    tree = config(model, data, tmp_path / "run")
    tree["method"] = {"name": "lora", "r": 4, "targets": "all-linear"}
    tree["train"]["max_steps"] = 8
    summary = train(validate(tree), log=lambda _: None)
    assert main(["eval", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    loss = float(out.splitlines()[1].split()[1])
    assert loss == pytest.approx(summary["final_dev"]["loss"], abs=1e-3)
    assert main(["merge", str(tmp_path / "run"), str(tmp_path / "merged")]) == 0
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    ours, _, _ = load_trained(tmp_path / "run")
    x = torch.randint(0, 300, (2, 10))
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, ours(x).logits, atol=1e-5)
    assert main(["predict", str(tmp_path / "run"), "hi"]) == 2
    assert "use `tunelab generate`" in capsys.readouterr().err


# On this tiny random Llama, scaling-vector methods have a few hundred parameters, and bottleneck
# adapters read sublayer outputs of about 1e-3 (random init), so they mostly learn a constant
# shift: they get larger steps or are held to a smaller (still deterministic) improvement.
# AdaLoRA's update is a product of three small factors (E starts at 0): it gets larger steps too.
@pytest.mark.parametrize("method", [{"name": "full"}, {"name": "freeze", "train_last_layers": 1},
                                    {"name": "lora", "targets": "all-linear"},
                                    {"name": "dora", "targets": "all-linear"},
                                    {"name": "ia3", "targets": "all-linear",
                                     "feedforward": ["down_proj"], "lr": 0.3, "ratio": 0.97},
                                    {"name": "vera", "r": 64, "lr": 0.1, "ratio": 0.97},
                                    {"name": "loha", "lr": 0.03}, {"name": "lokr", "lr": 0.03},
                                    {"name": "adalora", "init_r": 8, "target_r": 4, "tfinal": 10,
                                     "lr": 0.1},
                                    {"name": "houlsby", "reduction_factor": 4, "ratio": 0.97},
                                    {"name": "pfeiffer", "reduction_factor": 4, "ratio": 0.97}],
                         ids=lambda m: m["name"])
def test_every_method_trains_a_causal_lm(sft_setup, tmp_path, method, capsys):
    model, data = sft_setup
    tree = config(model, data, tmp_path / "run")
    method = dict(method)
    lr, ratio = method.pop("lr", 1e-2), method.pop("ratio", 0.95)
    tree["method"] = method
    tree["train"].update(max_steps=40, lr=lr)
    summary = train(validate(tree), log=lambda _: None)
    assert summary["final_dev"]["loss"] < ratio * summary["initial_dev"]["loss"]
    if summary["artifact_kind"] == "adapter":  # the saved adapter loads back to the same model
        from tunelab.runs.trained import load_trained

        ours, tok, _ = load_trained(tmp_path / "run")
        prompt = tok.apply_chat_template([{"role": "user", "content": "say one"}],
                                         add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)
        out = ours.generate(**prompt, max_new_tokens=2, do_sample=False)
        assert out.shape[1] > prompt["input_ids"].shape[1]  # generation runs on the loaded layers
        capsys.readouterr()
        assert main(["eval", str(tmp_path / "run")]) == 0
        loss = float(capsys.readouterr().out.splitlines()[1].split()[1])
        assert loss == pytest.approx(summary["final_dev"]["loss"], abs=1e-3)


def test_bitfit_on_a_model_without_biases_says_so(sft_setup, tmp_path):
    from tunelab.errors import MethodError

    model, data = sft_setup
    tree = config(model, data, tmp_path / "run")
    tree["method"] = {"name": "bitfit"}
    with pytest.raises(MethodError, match="this model has no bias parameters to train"):
        train(validate(tree), log=lambda _: None)
