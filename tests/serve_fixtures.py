"""A tiny Llama base and LoRA adapters (written by peft) whose greedy outputs differ."""

from __future__ import annotations

from pathlib import Path

import torch
from sft_fixtures import tiny_llama_dir

ADAPTERS = {"a1": (["q_proj", "v_proj"], 4, 1), "a2": (["o_proj", "down_proj"], 8, 2),
            "a3": (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                   2, 3)}


def peft_adapter(base: Path, out: Path, targets: list[str], r: int, seed: int) -> Path:
    """A PEFT LoRA adapter on `base` with random A and B (large enough to change outputs)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model.save_pretrained(out)
    return out


def tiny_served(root: Path) -> tuple[Path, dict[str, Path]]:
    """(base directory, {adapter name: adapter directory})."""
    base = tiny_llama_dir(root / "base")
    adapters = {name: peft_adapter(base, root / name, t, r, seed)
                for name, (t, r, seed) in ADAPTERS.items()}
    return base, adapters
