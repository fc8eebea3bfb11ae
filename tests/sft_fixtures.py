"""A tiny byte-level BPE tokenizer with a ChatML template, and a tiny Llama, built in-process."""

from __future__ import annotations

from pathlib import Path

import torch

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
