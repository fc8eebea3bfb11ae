"""`tunelab export RUN_DIR --to FORMAT OUT`: a run in a form other tools load.

    lora  an AdaLoRA run as a plain LoRA adapter (below)
    hf    the merged Hugging Face checkpoint with tokenizer and label maps (`tunelab merge`)
    onnx  an encoder run (classification, NER) for ONNX Runtime; --quantize int8 adds an
          int8 model (tunelab.export.onnx)
    gguf  a causal-LM run for llama.cpp / Ollama; --dtype f32, f16 or q8_0 (tunelab.export.gguf)

AdaLoRA's update s * B (A * E) (s = alpha / init_r) is a LoRA update at the layer's kept
rank: A' = A * E, B' = B * s * r / alpha, so that LoRA's alpha / r scaling gives back the
same product. Ranks differ per layer, so the adapter config carries them as peft's
rank_pattern; layers left with rank 0 add nothing and are not targeted. Tools that know LoRA
but not AdaLoRA (vLLM, peft's LoRA utilities, tunelab merge) then take the run as it is.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from tunelab.errors import AdapterError, ExportError
from tunelab.methods import head_modules
from tunelab.methods import targets as tgt
from tunelab.methods.adalora import adalora_layers
from tunelab.methods.lora import LoraConfig, LoraLinear
from tunelab.methods.peft_format import save_adapter
from tunelab.runs.trained import load_trained

FORMATS = ("lora", "hf", "onnx", "gguf")
QUANTIZE = ("int8",)  # --to onnx
DTYPES = ("f32", "f16", "q8_0")  # --to gguf
GGUF_DTYPE = "f16"  # llama.cpp's convert script's default too


@torch.no_grad()
def adalora_to_lora(model: torch.nn.Module) -> LoraConfig:
    """Replace every AdaLoRA layer of `model` by the LoRA layer that computes the same
    output (rank-0 layers by the plain base layer); returns the LoRA config describing them."""
    layers = adalora_layers(model)
    if not layers:
        raise AdapterError("export --to lora: the model has no AdaLoRA layers")
    ranks = {name: layer.r for name, layer in layers.items()}
    kept = {name: r for name, r in ranks.items() if r > 0}
    if not kept:
        raise AdapterError("export --to lora: every layer was pruned to rank 0; the adapter "
                           "changes nothing but the head")
    base_r = Counter(kept.values()).most_common(1)[0][0]
    first = next(iter(layers.values()))
    alpha = first.scaling  # LoRA's alpha = AdaLoRA's, so the config reads familiar
    dropout = getattr(first.lora_dropout, "p", 0.0)
    for name, layer in layers.items():
        plain = layer.rebuilt(layer.linear_weight(), layer.bias)
        plain.weight.requires_grad_(False)
        if plain.bias is not None:
            plain.bias.requires_grad_(False)
        if name not in kept:
            tgt.replace_module(model, name, plain)
            continue
        lora = LoraLinear(plain, layer.r, alpha, dropout, "standard")
        s = layer.scaling / (layer.ranknum + 1e-5)  # AdaLoRA's scale
        lora.lora_A.weight.copy_(layer.lora_A * layer.lora_E)  # (r, in)
        lora.lora_B.weight.copy_(layer.lora_B * (s / lora.scaling))  # (out, r)
        tgt.replace_module(model, name, lora)
    return LoraConfig(r=base_r, alpha=alpha, dropout=dropout, targets=list(kept),
                      rank_pattern={n: r for n, r in kept.items() if r != base_r})


def export_run(run_dir: Path, to: str, out: Path, quantize: str | None = None,
               dtype: str | None = None) -> Path:
    """Write the run in format `to` into `out`; returns `out`."""
    if to not in FORMATS:
        raise ExportError(f"export --to {to}: unknown format; choose from {', '.join(FORMATS)}")
    if quantize is not None and (to != "onnx" or quantize not in QUANTIZE):
        raise ExportError(f"export --quantize {quantize}: quantization applies to --to onnx "
                          f"({', '.join(QUANTIZE)})" + ("; for GGUF choose --dtype q8_0"
                                                         if to == "gguf" else ""))
    if dtype is not None and (to != "gguf" or dtype not in DTYPES):
        raise ExportError(f"export --dtype {dtype}: the weight type applies to --to gguf "
                          f"({', '.join(DTYPES)})" + ("; for ONNX choose --quantize int8"
                                                      if to == "onnx" else ""))
    if out.resolve() == run_dir.resolve():
        raise ExportError(f"export: OUT {out} is the run directory itself; choose a new one")
    if to == "hf":
        from tunelab.commands.merge_run import merge

        return merge(run_dir, out)
    if to == "onnx":
        from tunelab.export.onnx import export_onnx

        export_onnx(run_dir, out, quantize)
        return out
    if to == "gguf":
        from tunelab.export.gguf import export_gguf

        export_gguf(run_dir, out, dtype or GGUF_DTYPE)
        return out
    return _export_lora(run_dir, out)


def _export_lora(run_dir: Path, out: Path) -> Path:
    """An AdaLoRA run's adapter as a plain LoRA adapter at its final ranks."""
    model, _, info = load_trained(run_dir)
    if info.get("method") != "adalora":
        raise AdapterError(f"export --to lora: {run_dir} is a {info.get('method')} run; only "
                           "adalora runs are converted (a lora run's adapter/ already is LoRA)")
    cfg = adalora_to_lora(model)
    save_adapter(model, cfg, head_modules(model), info["base_model"], out,
                 task=info.get("route", info["task"]))
    ranks = {n: m.r for n, m in _lora_layers(model).items()}
    print(f"wrote a LoRA adapter to {out}: {len(ranks)} layers, total rank {sum(ranks.values())}, "
          f"r={cfg.r}" + (f" ({len(cfg.rank_pattern)} layers by rank_pattern)" if cfg.rank_pattern
                          else "") + "; loads with peft.PeftModel.from_pretrained")
    return out


def _lora_layers(model: torch.nn.Module) -> dict[str, LoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}
