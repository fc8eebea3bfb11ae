"""model.quantize's layer (tunelab/models/quantize.py): accuracy against the fp32 layer, the
bytes it keeps, its backward, and which layers of a model it replaces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunelab.errors import ModelError
from tunelab.models.quantize import (
    QuantizedLinear,
    dequantize_model,
    model_bytes,
    quantize_model,
    quantized_layers,
)

# Relative output error ||y_q - y|| / ||y|| of one layer on random N(0, 0.02^2) weights
# (512 -> 256) and N(0, 1) inputs. With x independent of W the output error is the weight
# error seen through x, so it is about the weights' relative RMS quantization error:
# - int8, one absmax scale per row: step = max|w| / 127 ~ 3.3 sigma / 127 for 512 Gaussian
#   weights, RMS error step / sqrt(12) -> ~0.0075 sigma (0.0074 measured); bound 0.01.
# - nf4, 16 normal-quantile levels per block of 64: ~0.093 measured (bitsandbytes and torchao
#   agree); bound 0.11. fp4's levels fit a Gaussian worse: ~0.122 measured; bound 0.14.
TOLERANCE = {"int8": 0.01, "nf4": 0.11, "fp4": 0.14}
# bits per weight kept (packed values and all scales, no bias): nf4/fp4 store 4 bits plus one
# 8-bit absmax per 64 weights and one fp32 per 256 absmax (double quantization) ~ 4.13;
# int8 stores 8 bits plus one fp32 scale per row of 512 -> 8.06. The bounds add the
# per-layer constant of the 4-bit code tables (1 KiB) at this small size.
BITS = {"int8": 8.1, "nf4": 4.7, "fp4": 4.7}


def _layer(bias: bool = False) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(512, 256, bias=bias)
    nn.init.normal_(layer.weight, std=0.02)
    return layer


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("scheme", ["nf4", "fp4", "int8"])
def test_quantized_output_is_within_tolerance_of_fp32(scheme):
    fp32 = _layer(bias=True)
    x = torch.randn(4, 16, 512, generator=torch.Generator().manual_seed(1))
    q = QuantizedLinear(fp32, scheme, torch.float32)
    with torch.no_grad():
        want, got = fp32(x), q(x)
    assert got.shape == want.shape == (4, 16, 256)
    err = _rel(got, want)
    assert err < TOLERANCE[scheme], err
    assert err > 1e-4  # it is really quantized, not the fp32 weight kept under another name
    weight_bits = 8 * (q.storage_bytes() - 256 * 4) / (512 * 256)  # minus the fp32 bias
    assert weight_bits < BITS[scheme], weight_bits


def test_double_quantization_stores_the_4bit_scales_in_8_bits():
    q = QuantizedLinear(_layer(), "nf4", torch.float32)
    assert q.qweight.dtype == torch.uint8 and q.qweight.numel() == 512 * 256 // 2
    assert q.quant_state.nested and q.quant_state.absmax.dtype == torch.uint8
    assert q.quant_state.absmax.numel() == 512 * 256 // 64


def test_backward_uses_the_dequantized_weight_and_keeps_the_weight_frozen():
    fp32 = _layer(bias=True)
    q = QuantizedLinear(fp32, "nf4", torch.float32)
    x = torch.randn(3, 512, requires_grad=True)
    q(x).pow(2).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    w = q.dequantized_weight()
    torch.nn.functional.linear(x2, w, q.bias.detach()).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    assert [n for n, _ in q.named_parameters()] == ["bias"] and not q.bias.requires_grad


def test_bfloat16_compute_dtype_returns_the_input_dtype():
    fp32 = _layer()
    q = QuantizedLinear(fp32, "int8", torch.bfloat16)
    x = torch.randn(2, 512)
    with torch.no_grad():
        y = q(x)
    assert y.dtype == torch.float32
    assert _rel(y, fp32(x).detach()) < 0.02  # bf16 products add ~0.4% to int8's 0.75%


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, max_position_embeddings=64))


def test_quantize_model_keeps_embeddings_and_output_layer_and_reports_bytes():
    model = _tiny_llama()
    before = model_bytes(model)
    report = quantize_model(model, "nf4")
    names = list(quantized_layers(model))
    assert len(names) == 2 * 7 == report.layers  # q, k, v, o, gate, up, down per block
    assert "model.layers.0.self_attn.q_proj" in names and "lm_head" not in names
    assert isinstance(model.lm_head, nn.Linear) and report.kept == ["lm_head"]
    assert report.model_bytes_before == before and report.model_bytes_after < before
    assert report.linear_bytes_after < 0.35 * report.linear_bytes_before
    text = "\n".join(report.lines())
    assert f"{before:,} before" in text and f"{report.model_bytes_after:,} after" in text


def test_classifier_head_stays_full_precision():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32,
                                                     num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, num_labels=2))
    report = quantize_model(model, "int8")
    assert isinstance(model.classifier, nn.Linear) and report.kept == ["classifier"]
    assert isinstance(model.bert.pooler.dense, QuantizedLinear)


def test_dequantize_model_gives_plain_linear_layers():
    model = _tiny_llama()
    x = torch.randint(0, 64, (2, 7))
    quantize_model(model, "int8")
    with torch.no_grad():
        want = model(x).logits
    assert dequantize_model(model) == 14 and not quantized_layers(model)
    assert all(type(m) is nn.Linear for n, m in model.named_modules() if n.endswith("proj"))
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, want, rtol=1e-4, atol=1e-5)
    assert set(model.state_dict()) >= {"model.layers.0.self_attn.q_proj.weight"}


def test_gpt2_conv1d_layers_are_refused_by_name():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=2, n_positions=16))
    with pytest.raises(ModelError, match="Conv1D.*model.quantize: null"):
        quantize_model(model, "nf4")


PEAK_SCRIPT = """
import sys
import psutil
from tunelab.models import load_causal_lm
from tunelab.models.quantize import bnb_functional, quantize_model
bnb_functional()  # its import (about 50 MB) is not what is measured
model = load_causal_lm(sys.argv[1])
loaded = psutil.Process().memory_info().rss
report = quantize_model(model, "int8")
status = open("/proc/self/status").read()  # VmHWM: this program's peak (ru_maxrss is not:
peak = int(status.split("VmHWM:")[1].split()[0]) * 1024  # it keeps the parent's, from fork)
grew = peak - loaded
print(grew / report.linear_bytes_before)
"""


def test_quantizing_a_memory_mapped_checkpoint_never_holds_the_whole_fp32_model(tmp_path):
    """A checkpoint is memory-mapped at load, and each page read while quantizing counts in
    the process' memory: the peak must grow by the int8 copy (1/4 of the fp32 Linear bytes)
    and a few layers' temporaries, not by every fp32 layer read so far and the heap left by
    quantizing each (measured: 0.50x with paging out and heap trimming, 2.3x without)."""
    import os
    import subprocess
    import sys

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=512, intermediate_size=2048,
                                 num_hidden_layers=8, num_attention_heads=8,
                                 num_key_value_heads=8)).save_pretrained(tmp_path)  # 134 MB
    with open(tmp_path / "model.safetensors", "rb") as f:  # as a checkpoint long on disk:
        os.fsync(f.fileno())  # written back and out of the page cache (pages just written
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # are slow to page out)
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path)], capture_output=True,
                         text=True, check=True)
    growth = float(out.stdout.split()[-1])  # peak growth / fp32 bytes of the quantized layers
    assert growth < 0.8, out.stdout + out.stderr
