"""A tiny byte-level BPE tokenizer with a ChatML template, and a tiny Llama, built in-process."""

from __future__ import annotations

from pathlib import Path

import torch

# instruction -> answer pairs a tiny model can learn in a few steps
PAIRS = [("say one", "one two three"), ("say fox", "the quick brown fox"),
         ("say hello", "hello world"), ("say sea", "the sea and the sky")]

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?",
          "answer: paris is the capital of france", "translate this sentence into german",
          "write a short poem about the sea and the sky", "one two three four five six seven"]


def tiny_tokenizer(pad_is_eos: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                  "<|im_end|>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 5, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>",
                                   pad_token="<|im_end|>" if pad_is_eos else "<pad>")
    fast.chat_template = CHATML
    return fast


def tiny_llama_dir(root: Path, pad_is_eos: bool = True) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer(pad_is_eos)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def tiny_gpt2():
    """A 2-layer GPT-2 (its attention and MLP are transformers' Conv1D, weights stored
    transposed), seeded so two calls give the same base."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2,
                                      n_positions=32)).eval()


def assert_conv1d_adapter_roundtrip(model, cfg, out: Path, scale: float = 0.05) -> None:
    """`model` is tiny_gpt2() with cfg's method applied: move its trainable weights, save the
    adapter (fan_in_fan_out must be set), and check peft's load and tunelab's merge both give
    the same logits."""
    import json

    from peft import PeftModel

    from tunelab.methods.peft_format import merge, save_adapter

    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * scale)
    x = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        want = model(x).logits
    save_adapter(model, cfg, [], "gpt2", out, task="causal_lm")
    assert json.loads((out / "adapter_config.json").read_text())["fan_in_fan_out"]
    with torch.no_grad():
        theirs = PeftModel.from_pretrained(tiny_gpt2(), out).eval()(x).logits
        merge(model)
        merged = model(x).logits
    assert torch.allclose(theirs, want, atol=1e-5) and torch.allclose(merged, want, atol=1e-5)
