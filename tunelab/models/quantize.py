"""model.quantize: the frozen base's Linear weights stored in 4 or 8 bits (QLoRA, Dettmers et al., 2023).

Each targeted nn.Linear is replaced, under the same module name, by a QuantizedLinear that
holds the packed weight and dequantizes it when a forward or backward needs it. The
quantization itself is bitsandbytes' (its CPU backend quantizes and dequantizes nf4, fp4 and
int8 here; on CUDA the same calls run its GPU kernels):

- nf4 / fp4: 4-bit blocks of 64 weights with one absmax each; the absmax values are
  quantized again to 8 bits in blocks of 256 (double quantization), as in QLoRA.
- int8: one absmax scale per output row (LLM.int8's vector-wise quantization, no outliers).

The embeddings, the output (vocabulary) layer and the task head stay in full precision:
they are small next to the blocks, or they train. Methods put their layers on top of a
QuantizedLinear (methods/layer.py reads `dequantized_weight()` for DoRA's norm and merges);
`dequantize_model` turns what is left back into nn.Linear for a plain checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.errors import ModelError
from tunelab.models.heads import head_modules

SCHEMES = ("nf4", "fp4", "int8")
BLOCKSIZE = 64  # weights per 4-bit absmax block (QLoRA's choice)
COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MADV_PAGEOUT = 21  # linux/mman.h
BNB_PIP = "pip install 'bitsandbytes>=0.50'"


def bnb_functional() -> Any:
    """bitsandbytes.functional, imported quietly (its CPU backend logs a warning when an
    optional hub kernel is unavailable; the plain CPU kernels we call do not need it)."""
    quiet = logging.getLogger("bitsandbytes")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import bitsandbytes.functional as bf
    except ImportError:
        raise ModelError(f"model.quantize needs the bitsandbytes package: {BNB_PIP}") from None
    finally:
        quiet.setLevel(level)
    return bf


class _DequantMatmul(torch.autograd.Function):
    """x W^T with W dequantized for the product only. Autograd keeps the packed weight, not
    the dequantized one, until backward: with plain F.linear every layer's full-precision
    weight would stay alive from forward to backward, as much memory as an fp32 model."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, layer: QuantizedLinear) -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantized_weight(x.dtype))  # (N, in) -> (N, out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad @ ctx.layer.dequantized_weight(grad.dtype), None  # (N, out) -> (N, in)


class QuantizedLinear(nn.Module):
    """A frozen nn.Linear whose weight is stored quantized; the bias stays a float Parameter.

    The packed weight and its scales are non-persistent buffers (a state dict holds only the
    bias): a quantized model is never saved as such; `dequantize_model` makes it plain first.
    """

    def __init__(self, linear: nn.Linear, scheme: str, compute_dtype: torch.dtype):
        super().__init__()
        if scheme not in SCHEMES:
            raise ModelError(f"model.quantize: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scheme, self.compute_dtype = scheme, compute_dtype
        self.param_dtype = linear.weight.dtype  # the dtype LoRA factors and merges use
        self.bias = linear.bias
        if self.bias is not None:
            self.bias.requires_grad_(False)
        weight = linear.weight.detach()
        bf = bnb_functional()
        self.quant_state: Any = None
        if scheme == "int8":
            packed, scale, _ = bf.int8_vectorwise_quant(weight.float())  # (out, in) int8, (out,)
            self.register_buffer("qscale", scale, persistent=False)
        else:
            packed, self.quant_state = bf.quantize_4bit(
                weight.float(), blocksize=BLOCKSIZE, compress_statistics=True, quant_type=scheme)
        self.register_buffer("qweight", packed, persistent=False)

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight as (out, in) floats in `dtype` (default: the original weight's dtype)."""
        bf = bnb_functional()
        if self.scheme == "int8":
            w = bf.int8_vectorwise_dequant(self.qweight, self.qscale)
        else:
            w = bf.dequantize_4bit(self.qweight, self.quant_state, quant_type=self.scheme)
        return w.to(dtype or self.param_dtype)

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x W^T in the compute dtype, without the bias, back in x's dtype."""
        y = _DequantMatmul.apply(x.to(self.compute_dtype).reshape(-1, self.in_features), self)
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)  # (..., out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.matmul(x)  # (..., in) -> (..., out)
        return y + self.bias.to(y.dtype) if self.bias is not None else y

    def storage_bytes(self) -> int:
        """Bytes this layer keeps for its weight (packed values and every scale) and bias."""
        return _nbytes(self.qweight, getattr(self, "qscale", None), self.bias) + self.state_bytes()

    def state_bytes(self) -> int:
        """Bytes of the 4-bit scales (bitsandbytes' QuantState: not buffers of the module)."""
        state = self.quant_state
        if state is None:
            return 0
        nested = (state.state2.absmax, state.state2.code) if state.state2 is not None else ()
        return _nbytes(state.absmax, state.code, state.offset, *nested)

    @torch.no_grad()
    def dequantized(self) -> nn.Linear:
        """A plain nn.Linear holding the dequantized weight (what merge writes)."""
        device = self.qweight.device
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                          device=device, dtype=self.param_dtype)
        layer.weight.copy_(self.dequantized_weight())
        if self.bias is not None:
            layer.bias.copy_(self.bias)
        return layer

    def _apply(self, fn: Any, recurse: bool = True) -> QuantizedLinear:
        super()._apply(fn, recurse)
        if self.quant_state is not None and self.quant_state.absmax.device != self.qweight.device:
            self.quant_state.to(self.qweight.device)  # the 4-bit scales follow the packed weight
        return self

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, {self.scheme}, "
                f"compute={str(self.compute_dtype).removeprefix('torch.')}")


@dataclass(frozen=True)
class QuantReport:
    """What quantization did: printed by `tunelab info` and at the start of a run."""

    scheme: str
    compute_dtype: str
    layers: int
    linear_bytes_before: int  # the quantized layers' weights and biases, before and after
    linear_bytes_after: int
    model_bytes_before: int  # every parameter and buffer of the model
    model_bytes_after: int
    kept: list[str]  # Linear layers left in full precision (the output layer, the task head)

    def lines(self) -> list[str]:
        double = " with double-quantized scales" if self.scheme != "int8" else ""
        share = 100.0 * self.model_bytes_after / max(self.model_bytes_before, 1)
        scheme = (f"model.quantize: {self.scheme}{double}, compute {self.compute_dtype}: "
                  f"{self.layers} Linear layers {_mb(self.linear_bytes_before)} -> "
                  f"{_mb(self.linear_bytes_after)}")
        total = (f"base model bytes: {self.model_bytes_before:,} before, "
                 f"{self.model_bytes_after:,} after quantization ({_mb(self.model_bytes_before)}"
                 f" -> {_mb(self.model_bytes_after)}, {share:.1f}%)")
        return [scheme, total, "kept in full precision: embeddings"
                + "".join(f", {k}" for k in self.kept)]


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _nbytes(*tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's weights: parameters, buffers and the 4-bit scales."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return _nbytes(*tensors.values()) + sum(q.state_bytes() for q in quantized_layers(model).values())


def quantize_model(model: nn.Module, scheme: str, compute_dtype: str = "float32") -> QuantReport:
    """Replace the model's nn.Linear layers, but the output layer and the task head, by
    QuantizedLinear in place (same module names, so adapter keys do not change)."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ModelError(f"model.compute_dtype: {compute_dtype!r}; use one of "
                         f"{', '.join(COMPUTE_DTYPES)}")
    before = model_bytes(model)
    chosen, kept = _quantizable(model)
    if not chosen:
        raise ModelError("model.quantize: the model has no nn.Linear layer outside its head to "
                         "quantize; set model.quantize: null")
    linear_before = linear_after = 0
    for name in chosen:
        layer = model.get_submodule(name)
        linear_before += sum(p.numel() * p.element_size() for p in layer.parameters())
        new = QuantizedLinear(layer, scheme, COMPUTE_DTYPES[compute_dtype])
        linear_after += new.storage_bytes()
        _replace(model, name, new)
        _page_out(layer.weight)  # else every layer read so far stays resident until the end
        _trim_heap()  # and so would quantization's temporaries (about 2x the layer's bytes)
    _release_load_memory(model)
    return QuantReport(scheme, compute_dtype, len(chosen), linear_before, linear_after,
                       before, model_bytes(model), kept)


def _page_out(t: torch.Tensor) -> None:
    """Ask Linux to reclaim the pages under `t` (madvise MADV_PAGEOUT, Linux >= 5.4).

    A checkpoint memory-mapped at load is read page by page as its layers are quantized, and
    every page read counts in the process' memory until the mapping goes: without this the
    peak while quantizing is the whole fp32 model, the peak a quantized base exists to avoid.
    PAGEOUT never loses data (a file-backed page is read again if touched, an anonymous one
    goes to swap or stays), so it is safe on any CPU tensor; off Linux, on a GPU, or where
    the kernel refuses it (older than 5.4) it does nothing."""
    import ctypes
    import mmap
    import sys

    if sys.platform != "linux" or t.device.type != "cpu":
        return
    start = t.data_ptr()
    first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the tensor only
    last = (start + t.numel() * t.element_size()) // mmap.PAGESIZE * mmap.PAGESIZE
    if last <= first:
        return
    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise(first, last - first, MADV_PAGEOUT)


@torch.no_grad()
def _release_load_memory(model: nn.Module) -> None:
    """Give back what quantizing leaves behind, so the saving shows in the process' memory:
    the kept tensors get their own copies (a checkpoint memory-mapped at load stays mapped,
    all its pages, while any tensor still points into it), and glibc returns the freed heap
    (quantization's temporaries) to the system. Measured on SmolLM2 int8: RSS 1454 -> 642 MB."""
    import gc

    for p in model.parameters():  # tied weights are one Parameter: they stay tied
        mapped, p.data = p.data, p.data.clone()
        _page_out(mapped)
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """glibc keeps freed heap memory for reuse; malloc_trim gives it back to the system."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps it
        pass


def _quantizable(model: nn.Module) -> tuple[list[str], list[str]]:
    """(Linear layers to quantize, Linear layers kept in full precision)."""
    from transformers.pytorch_utils import Conv1D

    conv1d = [n for n, m in model.named_modules() if isinstance(m, Conv1D)]
    if conv1d:
        raise ModelError(f"model.quantize: this model's layers are transformers' Conv1D "
                         f"({conv1d[0]}, GPT-2 style), which tunelab does not quantize; use a "
                         "model with nn.Linear layers (Llama, Qwen, BERT, ...) or "
                         "model.quantize: null")
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    heads = tuple(h + "." for h in head_modules(model))
    chosen, kept = [], []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        (kept if module is out_layer or (name + ".").startswith(heads) else chosen).append(name)
    return chosen, kept


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantized_layers(model: nn.Module) -> dict[str, QuantizedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantizedLinear)}


def dequantize_model(model: nn.Module) -> int:
    """Replace every QuantizedLinear left in the model by a plain nn.Linear; returns how many."""
    layers = quantized_layers(model)
    for name, layer in layers.items():
        _replace(model, name, layer.dequantized())
    return len(layers)
