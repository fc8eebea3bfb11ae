"""Many LoRA adapters in one batch: each row of the batch applies its own adapter's delta.

Serving several adapters on one base (punica, S-LoRA) batches requests for different
adapters together instead of running one batch per adapter or merging weights back and
forth. Each adapted Linear becomes a RowLoraLinear that keeps every adapter's A and B (scaling
folded into B); before a forward, the caller says which adapter each row uses
(`RowAdapters.choose`), and each layer applies each adapter to its segment of rows, as
punica's segmented kernel does: y = x W^T + b, then y[rows_i] += (x[rows_i] A_i^T) B_i^T.
Rows of the base model cost nothing extra; a batch of base rows runs exactly the base layer.

    rows = enable_rows(model)
    add_row_adapter(model, "sql", "runs/sql/adapter")
    rows.choose([None, "sql", "sql"])      # row 0: the base model
    logits = model(input_ids).logits
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tunelab.errors import AdapterError
from tunelab.methods import targets as tgt
from tunelab.methods.base import AdapterLayer
from tunelab.methods.layer import AdaptedLinear
from tunelab.methods.lora import lora_scaling
from tunelab.methods.multi_adapter import read_lora

ATTR = "tunelab_rows"


class RowAdapters:
    """The adapters loaded on one model, in order, and which batch rows use each now.
    Shared by every RowLoraLinear of the model."""

    def __init__(self) -> None:
        self.names: list[str] = []
        # (adapter name, the batch rows that use it) for each adapter in the batch
        self.groups: list[tuple[str, torch.Tensor]] = []

    def choose(self, per_row: list[str | None]) -> None:
        """Row i of the next forwards uses adapter per_row[i] (None: the base model)."""
        rows: dict[str, list[int]] = {}
        for i, name in enumerate(per_row):
            if name is not None:
                rows.setdefault(name, []).append(i)
        self.groups = [(name, torch.tensor(index)) for name, index in rows.items()]


class RowLoraLinear(AdaptedLinear):
    """A frozen Linear plus named LoRA adapters, chosen per batch row (see module docstring)."""

    def __init__(self, base: nn.Module, shared: RowAdapters):
        super().__init__(base)
        self.shared = shared
        self.held: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name: (A^T, s * B^T)

    def hold(self, name: str, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        """Keep adapter `name`'s A (r, in) and B (out, r), transposed for x @ A^T @ B^T."""
        w = self.weight
        self.held[name] = (a.T.contiguous().to(w.device, w.dtype),
                           (b * scaling).T.contiguous().to(w.device, w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, in) -> (B, T, out); per adapter in the batch, two small GEMMs on its rows
        out = self.base_forward(x)
        for name, rows in self.shared.groups:
            factors = self.held.get(name)
            if factors is None:  # this adapter leaves this layer alone
                continue
            a_t, b_t = factors  # (in, r), (r, out)
            out.index_add_(0, rows, (x[rows] @ a_t @ b_t).to(out.dtype))  # (k, T, out)
        return out


def row_adapters(model: nn.Module) -> RowAdapters:
    found = model.__dict__.get(ATTR)
    if found is None:
        raise AdapterError("this model has no per-row adapters; call enable_rows(model) first")
    return found


def enable_rows(model: nn.Module) -> RowAdapters:
    """Prepare `model` (a base model without adapters) for per-row adapters."""
    if ATTR in model.__dict__:
        return model.__dict__[ATTR]
    if any(isinstance(m, AdapterLayer) for m in model.modules()):
        raise AdapterError("per-row adapters need the plain base model; this one already "
                           "carries adapter layers (load the base, then add each adapter)")
    model.__dict__[ATTR] = RowAdapters()
    return model.__dict__[ATTR]


def add_row_adapter(model: nn.Module, name: str, adapter_dir: str | Path) -> list[str]:
    """Load the LoRA adapter in `adapter_dir` as `name`; returns the modules it adapts.
    Checked whole before the model changes."""
    shared = row_adapters(model)
    if name in shared.names:
        raise AdapterError(f"an adapter named {name!r} is already loaded; give this one "
                           "another name")
    lora = read_lora(model, name, adapter_dir)
    if lora.head_state:
        raise AdapterError(f"{lora.weights}: adapter {name!r} also trains "
                           f"{', '.join(sorted(lora.head_state)[:3])}; per-row serving shares "
                           "every weight but the LoRA factors (merge it and serve it alone)")
    opts = lora.options
    for module, (a, b) in lora.factors.items():
        layer = model.get_submodule(module)
        if not isinstance(layer, RowLoraLinear):
            layer = RowLoraLinear(layer, shared)
            tgt.replace_module(model, module, layer)
        layer.hold(name, a, b, lora_scaling(opts.alpha, a.shape[0], opts.scaling))
    shared.names.append(name)
    return list(lora.factors)


def remove_row_adapter(model: nn.Module, name: str) -> None:
    """Drop adapter `name` (its layers stay RowLoraLinear; without adapters they run the base)."""
    shared = row_adapters(model)
    if name not in shared.names:
        raise AdapterError(f"no adapter named {name!r} is loaded (loaded: "
                           f"{', '.join(shared.names) or 'none'})")
    for layer in model.modules():
        if isinstance(layer, RowLoraLinear):
            layer.held.pop(name, None)
    shared.names.remove(name)
