"""Translation test data: a few parallel pairs, a corpus on disk, a tiny T5, a run config."""

from __future__ import annotations

from sft_fixtures import tiny_tokenizer

PAIRS = [("the quick brown fox", "der schnelle braune fuchs"), ("hello world", "hallo welt"),
         ("the sea and the sky", "das meer und der himmel"), ("one two three", "eins zwei drei")]


def write_corpus(root, pairs=PAIRS, splits=("train", "dev", "test")):
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        (root / f"{split}.en").write_text("\n".join(s for s, _ in pairs) + "\n")
        (root / f"{split}.de").write_text("\n".join(t for _, t in pairs) + "\n")
    return root


def tiny_t5_dir(root):
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tiny_tokenizer(pad_is_eos=False)
    import torch

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, d_kv=16, num_layers=2,
                   num_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                   decoder_start_token_id=tok.pad_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def config(model, corpus, out, method="full", steps=60, lr=1e-2, schedule="linear"):
    return {"task": "translation", "model": {"name": str(model), "max_length": 32},
            "data": {"path": str(corpus), "max_dev_examples": 4, "max_test_examples": 4},
            "generation": {"max_new_tokens": 40, "batch_size": 2},
            "method": {"name": method},
            "train": {"batch_size": 4, "lr": lr, "max_steps": steps, "warmup_ratio": 0.0,
                      "eval_every": steps, "schedule": schedule},
            "output_dir": str(out)}
