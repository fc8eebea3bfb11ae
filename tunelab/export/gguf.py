"""A causal-LM run (adapter merged) or model directory as one GGUF file for llama.cpp / Ollama.

Written with the `gguf` package's GGUFWriter in the layout llama.cpp reads for its `llama`
architecture (Llama, SmolLM2, Mistral) and `qwen2`: llama.* hyperparameters, blk.N.* tensor
names, and the tokenizer (gguf_tokenizer.py). Hugging Face Llama checkpoints rotate the two
*halves* of each attention head; llama.cpp's llama rotates *adjacent pairs*, so the Q and K rows
are interleaved here (Qwen2 runs with the halves convention in llama.cpp and is left as is).
Norms and other 1-D tensors stay f32 in every dtype, as llama.cpp's converter keeps them. The
file then checks itself by being read back (gguf_check.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tunelab.errors import AdapterError, ExportError
from tunelab.export import gguf_check, gguf_tokenizer
from tunelab.io import DiskFullError, atomic_write
from tunelab.methods.peft_format import merge
from tunelab.models import load_causal_lm, load_tokenizer
from tunelab.models.resolve import resolve as resolve_model
from tunelab.runs.layout import load_run_config, read_run_info
from tunelab.runs.trained import is_run_dir, load_trained

DTYPES = {"f32": 0, "f16": 1, "q8_0": 7}  # -> general.file_type (llama.cpp's LlamaFileType)
ARCHS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2"}  # model_type -> GGUF arch
PERMUTED = {"llama"}  # archs whose rotary pairs are adjacent rows in llama.cpp

TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
LAYER = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
         "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def export_gguf(run_dir: Path, out: Path, dtype: str = "f16", prompts: list[str] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write `run_dir` (a causal-LM run, or a model name / directory) as one GGUF file at `out`
    (a .gguf path, or a directory that gets model-<dtype>.gguf), then read it back and compare.
    Returns file, bytes, dtype, max_logit_diff, greedy_match, tokenizer_match and details."""
    if dtype not in DTYPES:
        raise ExportError(f"GGUF dtype '{dtype}': write one of {', '.join(DTYPES)} (q8_0: 8-bit "
                          "blocks, about a quarter of f32's size)")
    run_dir = Path(run_dir)
    model, tokenizer, template = load_source(run_dir)
    arch = ARCHS[model.config.model_type]
    vocab = gguf_tokenizer.describe(tokenizer, model.config.vocab_size, template)
    path = _target(Path(out), dtype)
    try:
        atomic_write(path, lambda tmp: _write(tmp, model, vocab, arch, dtype,
                                                   run_dir.resolve().name))
    except DiskFullError as exc:
        raise ExportError(str(exc)) from None
    result = gguf_check.check(path, model, tokenizer, vocab, dtype, prompts)
    result = {"file": str(path), "bytes": path.stat().st_size, "dtype": dtype, "arch": arch,
              "pre_tokenizer": vocab.pre, **result}
    log(gguf_check.summary(result))
    if dtype == "f32" and not result["ok"]:
        raise ExportError(f"{path}: the f32 GGUF does not reproduce the model when read back "
                         f"(max |logit diff| {result['max_logit_diff']:.2e}, greedy match "
                         f"{result['greedy_match']}); do not use it, and report this as a bug")
    if not result["tokenizer_match"]:
        raise ExportError(f"{path}: the tokenizer read back from the GGUF differs from the "
                         f"model's ({gguf_check.tokenizer_problem(result)}); llama.cpp would "
                         "feed the model wrong ids, so do not use this file")
    return result


def load_source(source: Path) -> tuple[Any, Any, str | None]:
    """(model with any adapter merged, tokenizer, the chat template the run trained with);
    the model's architecture is checked before the tokenizer is looked at."""
    if not is_run_dir(source):
        path = resolve_model(str(source))
        model = load_causal_lm(path).eval()
        gguf_arch(model.config, source)
        return model, load_tokenizer(path), None
    info = read_run_info(source)
    if info.get("route", info["task"]) != "causal_lm":
        raise ExportError(f"{source}: a {info['task']} run; GGUF holds causal language models "
                         "(text generation in llama.cpp / Ollama): export a causal_lm run, or "
                         f"this {info['task']} run with --to onnx or --to hf")
    model, tokenizer, _ = load_trained(source)
    gguf_arch(model.config, source)
    try:
        merge(model)
    except AdapterError as exc:
        raise ExportError(f"{source}: a {info['method']} run cannot be written as GGUF ({exc}); "
                         "GGUF holds plain weights: export a run of a mergeable method (lora, "
                         "dora, ia3, vera, loha, lokr) or a full one") from None
    return model.eval(), tokenizer, _run_template(source)


def _run_template(run_dir: Path) -> str | None:
    """The text of the run's data.template, when it trained with one."""
    name = getattr(load_run_config(run_dir).data, "template", None)
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise ExportError(f"{run_dir}: the run trained with the chat template {path}, which is "
                         "gone; put it back, since the GGUF must carry the template it learned")
    return path.read_text(encoding="utf-8")


def gguf_arch(config: Any, source: Path) -> str:
    """llama.cpp's architecture for this model, or an ExportError naming what is supported."""
    kind = getattr(config, "model_type", None)
    if kind not in ARCHS:
        names = ", ".join(getattr(config, "architectures", None) or [str(kind)])
        raise ExportError(f"{source}: a {kind} model ({names}); GGUF export writes Llama-style "
                         f"models ({', '.join(ARCHS)}: SmolLM2, Llama, Qwen2); export --to hf "
                         "and convert with llama.cpp's convert_hf_to_gguf.py")
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
                or {})
    window = getattr(config, "sliding_window", None)
    problems = {
        f"activation {config.hidden_act}": config.hidden_act != "silu",
        "MLP biases": bool(getattr(config, "mlp_bias", False)),
        f"rope scaling {rope.get('rope_type')}": rope.get("rope_type", "default") != "default",
        f"sliding-window attention ({window})": bool(
            getattr(config, "use_sliding_window", kind == "mistral") and window
            and window < config.max_position_embeddings),
    }
    found = [what for what, bad in problems.items() if bad]
    if found:
        raise ExportError(f"{source}: {kind} with {', '.join(found)}, which tunelab's GGUF export "
                         "does not write; export --to hf and use llama.cpp's converter")
    return ARCHS[kind]


def _target(out: Path, dtype: str) -> Path:
    if out.suffix.lower() == ".gguf":
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: a file that is not a .gguf; give a .gguf path or a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out / f"model-{dtype}.gguf"


def _write(path: Path, model: Any, vocab: gguf_tokenizer.Vocab, arch: str, dtype: str,
           name: str) -> None:
    import gguf

    writer = gguf.GGUFWriter(None, arch)
    writer.add_name(name)
    writer.add_file_type(DTYPES[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _hparams(writer, model.config)
    gguf_tokenizer.write(writer, vocab)
    for tensor_name, data, raw in tensors(model, arch, dtype):
        writer.add_tensor(tensor_name, data, raw_dtype=raw)
    try:
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _hparams(writer: Any, config: Any) -> None:
    """llama.* (or qwen2.*) keys: what llama.cpp needs to build the graph."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 1e4))))
    writer.add_vocab_size(config.vocab_size)


def gguf_name(hf_name: str) -> str | None:
    """llama.cpp's name for a Hugging Face parameter name (None: llama.cpp has no place for it)."""
    stem, _, kind = hf_name.rpartition(".")
    if stem in TOP:
        return f"{TOP[stem]}.{kind}"
    layer = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", stem)
    if layer and layer.group(2) in LAYER:
        return f"blk.{layer.group(1)}.{LAYER[layer.group(2)]}.{kind}"
    return None


def interleave_rotary(weight: Any, heads: int) -> Any:
    """Rows of each head reordered from (first half, second half) to (pair 0, pair 1, ...):
    row i of the first half and row i of the second half become rows 2i and 2i+1."""
    half = weight.shape[0] // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def tensors(model: Any, arch: str, dtype: str) -> Iterator[tuple[str, Any, Any]]:
    """(GGUF name, data, raw GGML type or None) per parameter; a tied output layer appears
    once (as token_embd), which tells llama.cpp to reuse the embeddings."""
    config = model.config
    heads = {"q_proj": config.num_attention_heads,
             "k_proj": getattr(config, "num_key_value_heads", None) or config.num_attention_heads}
    for hf_name, param in model.named_parameters():  # tied copies are listed once
        name = gguf_name(hf_name)
        if name is None:
            raise ExportError(f"parameter {hf_name} has no place in llama.cpp's {arch} layout; "
                             "the model is not a plain Llama-style model")
        data = param.detach().float().cpu()
        proj = hf_name.split(".")[-2]
        if arch in PERMUTED and proj in heads:
            data = interleave_rotary(data, heads[proj])
        yield (name, *_encode(data.numpy(), dtype))


def _encode(data: Any, dtype: str) -> tuple[Any, Any]:
    """f32 for 1-D tensors and f32 files; f16; or q8_0 blocks of 32 (f16 for a row length that
    is not a multiple of 32, as llama.cpp's converter falls back)."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import QuantError, quantize

    if data.ndim == 1 or dtype == "f32":
        return data.astype(np.float32), None
    if dtype == "q8_0":
        try:
            return quantize(data, GGMLQuantizationType.Q8_0), GGMLQuantizationType.Q8_0
        except QuantError:
            print(f"q8_0: a tensor of shape {data.shape} is kept f16", file=sys.stderr)
    return data.astype(np.float16), None
