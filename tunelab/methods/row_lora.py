"""Many LoRA adapters in one batch: each row of the batch applies its own adapter's delta.

Serving several adapters on one base (punica, S-LoRA) batches requests for different
adapters together instead of running one batch per adapter or merging weights back and
forth. Each adapted Linear becomes a RowLoraLinear that keeps every adapter's A and B stacked
(padded to the largest rank with zeros, scaling folded into B); before a forward, the caller
says which adapter each row uses (`RowAdapters.choose`), and a layer gathers those rows'
factors: y = x W^T + b, then y[rows] += (x[rows] A_i^T) B_i^T. Rows of the base model cost
nothing extra; a batch of base rows only runs exactly the base layer.

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
    """The adapters loaded on one model, in order, and which one each batch row uses now.
    Shared by every RowLoraLinear of the model."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.version = 0  # bumped when adapters come or go: layers restack their factors
        self.rows: torch.Tensor | None = None  # (k,) batch rows that use an adapter
        self.which: torch.Tensor | None = None  # (k,) each such row's index into names

    def choose(self, per_row: list[str | None]) -> None:
        """Row i of the next forwards uses adapter per_row[i] (None: the base model)."""
        picked = [(i, self.names.index(n)) for i, n in enumerate(per_row) if n is not None]
        if not picked:
            self.rows = self.which = None
            return
        self.rows = torch.tensor([i for i, _ in picked])
        self.which = torch.tensor([k for _, k in picked])


class RowLoraLinear(AdaptedLinear):
    """A frozen Linear plus named LoRA adapters, chosen per batch row (see module docstring)."""

    def __init__(self, base: nn.Module, shared: RowAdapters):
        super().__init__(base)
        self.shared = shared
        self.held: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name: (A, s * B)
        self._stacks: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def hold(self, name: str, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        w = self.weight
        self.held[name] = (a.to(w.device, w.dtype), (b * scaling).to(w.device, w.dtype))

    def stacks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A (n, r_max, in) and s * B (n, out, r_max) over shared.names; zeros where this
        layer lacks an adapter or its rank is smaller."""
        if self._stacks is None or self._stacks[0] != self.shared.version:
            n, w = len(self.shared.names), self.weight
            r_max = max((a.shape[0] for a, _ in self.held.values()), default=1)
            a_all = torch.zeros(n, r_max, self.in_features, dtype=w.dtype, device=w.device)
            b_all = torch.zeros(n, self.out_features, r_max, dtype=w.dtype, device=w.device)
            for k, name in enumerate(self.shared.names):
                if name in self.held:
                    a, b = self.held[name]
                    a_all[k, : a.shape[0]], b_all[k, :, : b.shape[1]] = a, b
            self._stacks = (self.shared.version, a_all, b_all)
        return self._stacks[1], self._stacks[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, in) -> (B, T, out)
        out = self.base_forward(x)
        rows, which = self.shared.rows, self.shared.which
        if rows is None or which is None or not self.held:
            return out
        a, b = self.stacks()
        down = torch.bmm(x[rows], a[which].transpose(1, 2))  # (k, T, r_max)
        delta = torch.bmm(down, b[which].transpose(1, 2))  # (k, T, out)
        return out.index_add(0, rows, delta.to(out.dtype))


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
    shared.version += 1
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
    shared.version += 1
