"""Structural edits of a transformers model that its own config still describes, so the
result saves with save_pretrained and loads with plain from_pretrained: dropping layers
(a smaller student, layer pruning). Head and FFN pruning live in tunelab/models/prune.py."""

from __future__ import annotations

from typing import Any

from torch import nn

from tunelab.errors import ModelError

# config attributes that count the transformer blocks, by architecture family
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


def layer_count(config: Any) -> int:
    for key in LAYER_COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            return int(getattr(config, key))
    raise ModelError(f"{type(config).__name__}: no layer count in the config (looked for "
                     f"{', '.join(LAYER_COUNT_KEYS)})")


def block_list(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks: the first one, inside the base model, with as
    many entries as the config's layer count (bert.encoder.layer, model.layers, transformer.h)."""
    n = layer_count(model.config)
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n and n > 0:
            return module
    raise ModelError(f"{type(model).__name__}: cannot find its list of {n} transformer blocks")


def keep_indices(keep: int | list[int], n: int, key: str = "model.keep_layers") -> list[int]:
    """`keep` as sorted layer indices: an int k keeps the first k (the top layers are the
    ones dropped, as DistilBERT-style students do); a list names them (negatives count from
    the end)."""
    if isinstance(keep, int):
        if not 1 <= keep <= n:
            raise ModelError(f"{key}: {keep}, but the model has {n} layers; keep 1 to {n}")
        return list(range(keep))
    out = sorted({i + n if i < 0 else i for i in keep})
    bad = [i for i in keep if not -n <= i < n]
    if bad or not out:
        raise ModelError(f"{key}: {keep} names no layer or layers outside 0..{n - 1} "
                         f"({bad}); the model has {n} layers")
    return out


def drop_layers(model: nn.Module, keep: list[int]) -> list[int]:
    """Keep the blocks `keep` (sorted indices) and drop the rest, in place; the config's layer
    count (and per-layer lists such as layer_types) follow, and each kept block's layer_idx
    is renumbered so a KV cache indexes it right. Returns the dropped indices."""
    blocks = block_list(model)
    n = len(blocks)
    dropped = [i for i in range(n) if i not in keep]
    kept = [blocks[i] for i in keep]
    for new, block in enumerate(kept):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new
    for i in reversed(dropped):
        del blocks[i]  # ModuleList renumbers the rest 0..k-1 (the state dict keys follow)
    config = model.config
    for key in LAYER_COUNT_KEYS:
        if isinstance(getattr(config, key, None), int):
            setattr(config, key, len(keep))
    for key, value in list(vars(config).items()):
        if isinstance(value, list) and len(value) == n and key != "architectures":
            setattr(config, key, [value[i] for i in keep])  # layer_types and the like
    return dropped
