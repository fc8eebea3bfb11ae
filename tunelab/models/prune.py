"""Structured pruning surgery: attention heads and FFN neurons removed from a transformers
model so that its own config still describes it (save_pretrained, then plain from_pretrained,
gives the same outputs). Layer dropping lives in tunelab/models/surgery.py.

A config holds one head count and one FFN width for every layer, so each layer must keep the
same number. Heads can only be pruned where the config states the head size (`head_dim`:
Llama, Qwen2, Mistral, SmolLM2, ...): BERT derives it as hidden_size / num_attention_heads,
so a BERT with fewer heads has no config transformers would load. With grouped-query
attention every KV group keeps the same number of query heads (the key/value projections
stay); with one query head per KV group (plain multi-head attention) a head goes with its
key and value rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunelab.errors import ModelError
from tunelab.models.surgery import block_list

HEAD_ARCHITECTURES = ("Llama-style attention (self_attn.q_proj/k_proj/v_proj/o_proj) whose "
                      "head size is head_dim: Llama, SmolLM2, Mistral, Qwen2, Qwen3")
FFN_LAYOUTS = ("BERT-style intermediate.dense / output.dense",
               "Llama-style mlp.gate_proj / up_proj / down_proj")


@dataclass(frozen=True)
class HeadLayout:
    heads: int      # query heads per layer
    kv_heads: int   # key/value heads (groups) per layer
    head_dim: int

    @property
    def per_group(self) -> int:
        return self.heads // self.kv_heads


def _layout(config: Any) -> HeadLayout:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return HeadLayout(heads, kv, head_dim)


def head_support(config: Any) -> str | None:
    """Why the heads of a model with `config` cannot be pruned, or None when they can. Tried
    on the meta device (no memory, no weights): the base model built from the config with one
    query head per KV group and head_dim set must have attention projections of that size."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoModel

    name = type(config).__name__
    if not isinstance(getattr(config, "num_attention_heads", None), int):
        return f"{name} has no num_attention_heads"
    old = _layout(config)
    heads = old.kv_heads if old.per_group > 1 else 1  # one query head per KV group, or one
    trial = _with_heads(config, heads, heads if old.per_group == 1 else old.kv_heads, old.head_dim)
    try:
        with torch.device("meta"):
            block = block_list(AutoModel.from_config(trial))[0]
        if attention_output(block).in_features != heads * old.head_dim:
            return (f"{name} has no head_dim of its own: its head size is hidden_size / "
                    "num_attention_heads, so a model with fewer heads cannot be described by "
                    "a config that transformers loads")
        attention_projections(block)
    except ModelError as exc:
        return str(exc)
    except (StrictDataclassError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        return f"{name} cannot be built with fewer heads ({type(exc).__name__}: {exc})"
    return None


def head_layout(config: Any) -> HeadLayout:
    why = head_support(config)
    if why:
        raise ModelError(f"cannot prune attention heads: {why}; heads can be pruned in "
                         f"{HEAD_ARCHITECTURES}")
    return _layout(config)


def _with_heads(config: Any, heads: int, kv_heads: int, head_dim: int) -> Any:
    trial = copy.deepcopy(config)
    trial.num_attention_heads, trial.head_dim = heads, head_dim
    if getattr(trial, "num_key_value_heads", None) is not None:
        trial.num_key_value_heads = kv_heads
    return trial


def check_head_count(config: Any, heads: int, kv_heads: int) -> None:
    """Refuse a head count the config class itself refuses (LlamaConfig wants hidden_size to
    be a multiple of num_attention_heads even with head_dim given), before any surgery."""
    # what config.validate() raises
    from huggingface_hub.errors import StrictDataclassError

    trial = _with_heads(config, heads, kv_heads, _layout(config).head_dim)
    try:
        if hasattr(trial, "validate"):
            trial.validate()
    except (StrictDataclassError, ValueError, TypeError) as exc:
        reason = str(getattr(exc, "__cause__", None) or exc).strip()
        raise ModelError(f"{heads} attention heads ({kv_heads} key/value heads) per layer: "
                         f"{type(config).__name__} refuses it ({reason}); keep a head count "
                         f"that divides hidden_size ({getattr(config, 'hidden_size', '?')})") from None


def attention_projections(block: nn.Module) -> dict[str, nn.Linear]:
    """q/k/v/o projections of a Llama-style block (self_attn.q_proj ... o_proj)."""
    attn = getattr(block, "self_attn", None)
    found = {name: getattr(attn, f"{name}_proj", None) for name in "qkvo"}
    if not all(isinstance(m, nn.Linear) for m in found.values()):
        raise ModelError(f"{type(block).__name__}: no self_attn.q_proj/k_proj/v_proj/o_proj "
                         f"Linear layers; heads can be pruned in {HEAD_ARCHITECTURES}")
    return found  # type: ignore[return-value]


def attention_output(block: nn.Module) -> nn.Linear:
    """The projection whose input is the heads' outputs side by side, (B, T, heads * d)."""
    self_output = getattr(getattr(block, "attention", None), "output", None)
    dense = getattr(self_output, "dense", None)
    if isinstance(dense, nn.Linear):  # BERT-style: attention.output.dense
        return dense
    return attention_projections(block)["o"]


def ffn_layers(block: nn.Module) -> tuple[list[nn.Linear], nn.Linear]:
    """(the layers whose output rows are the FFN neurons, the layer that reads them)."""
    mlp = getattr(block, "mlp", None)
    ups = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj")]
    if all(isinstance(m, nn.Linear) for m in ups) and isinstance(getattr(mlp, "down_proj", None),
                                                                 nn.Linear):
        return ups, mlp.down_proj  # type: ignore[return-value]
    up = getattr(getattr(block, "intermediate", None), "dense", None)
    down = getattr(getattr(block, "output", None), "dense", None)
    if isinstance(up, nn.Linear) and isinstance(down, nn.Linear):
        return [up], down
    raise ModelError(f"{type(block).__name__}: no FFN layout tunelab can prune (knows "
                     f"{' and '.join(FFN_LAYOUTS)})")


def ffn_output(block: nn.Module) -> nn.Linear:
    """The layer whose input is the FFN activation, (B, T, intermediate_size)."""
    return ffn_layers(block)[1]


def _keep(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """In place: keep output rows (dim 0) or input columns (dim 1) `index` of `linear`."""
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight.index_select(dim, index).clone(),
                                     requires_grad=linear.weight.requires_grad)
        if dim == 0 and linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias[index].clone(),
                                       requires_grad=linear.bias.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape


def _rows(units: list[int], size: int) -> torch.Tensor:
    """Row indices of units (heads) of `size` rows each."""
    return torch.tensor([u * size + j for u in units for j in range(size)], dtype=torch.long)


def _uniform(keep: dict[int, list[int]], n_layers: int, width: int, what: str
             ) -> dict[int, list[int]]:
    """`keep` for every layer (a layer not named keeps all), sorted, checked: indices in range
    and the same count in every layer (the config holds one number for all)."""
    full = {i: sorted(set(keep.get(i, range(width)))) for i in range(n_layers)}
    bad = {i: k for i, k in keep.items() if not 0 <= i < n_layers}
    if bad:
        raise ModelError(f"{what}: layers {sorted(bad)} do not exist (the model has {n_layers})")
    for i, kept in full.items():
        if not kept or kept[0] < 0 or kept[-1] >= width:
            raise ModelError(f"{what}: layer {i} keeps {kept}; give 1 or more of 0..{width - 1}")
    counts = {len(k) for k in full.values()}
    if len(counts) > 1:
        raise ModelError(f"{what}: layers keep different counts ({sorted(counts)}); the config "
                         "holds one number for all layers, so keep the same count in each")
    return full


def prune_heads(model: nn.Module, keep: dict[int, list[int]]) -> HeadLayout:
    """Keep query heads `keep[layer]` (indices 0..heads-1), in place; returns the new layout.
    Grouped-query attention: each KV group keeps the same number of its query heads. One query
    head per group: a dropped head takes its key and value rows along."""
    old = head_layout(model.config)
    blocks = block_list(model)
    full = _uniform(keep, len(blocks), old.heads, "heads")
    n_kept = len(full[0])
    check_head_count(model.config, n_kept, n_kept if old.per_group == 1 else old.kv_heads)
    projections = [attention_projections(b) for b in blocks]  # all checked before any cut
    for i, kept in full.items():
        groups = [sum(1 for h in kept if h // old.per_group == g) for g in range(old.kv_heads)]
        if old.per_group > 1 and len(set(groups)) > 1:
            raise ModelError(f"heads: layer {i} keeps {groups} query heads per KV group; with "
                             "grouped-query attention every group keeps the same number")
    for i, kept in full.items():
        rows = _rows(kept, old.head_dim)
        # one query head per group (multi-head attention): heads and their k/v go together
        for name in "qkv" if old.per_group == 1 else "q":
            _keep(projections[i][name], rows, 0)
        _keep(projections[i]["o"], rows, 1)
    kv = n_kept if old.per_group == 1 else old.kv_heads
    new = HeadLayout(n_kept, kv, old.head_dim)
    for block in blocks:
        attn = block.self_attn
        for attr, value in (("num_key_value_groups", new.per_group), ("num_heads", new.heads),
                            ("num_key_value_heads", new.kv_heads)):
            if isinstance(getattr(attn, attr, None), int):
                setattr(attn, attr, value)
    config = model.config
    config.num_attention_heads, config.head_dim = new.heads, new.head_dim
    if getattr(config, "num_key_value_heads", None) is not None:
        config.num_key_value_heads = new.kv_heads
    return new


def ffn_width(config: Any) -> int:
    width = getattr(config, "intermediate_size", None)
    if not isinstance(width, int):
        raise ModelError(f"{type(config).__name__}: no single intermediate_size in the config; "
                         f"FFN neurons can be pruned in {' and '.join(FFN_LAYOUTS)} models")
    return width


def prune_ffn(model: nn.Module, keep: dict[int, list[int]]) -> int:
    """Keep FFN neurons `keep[layer]` (indices 0..intermediate_size-1), in place; returns the
    new intermediate_size."""
    width = ffn_width(model.config)
    blocks = block_list(model)
    full = _uniform(keep, len(blocks), width, "ffn")
    layers = [ffn_layers(b) for b in blocks]  # all checked before any cut
    for i, kept in full.items():
        ups, down = layers[i]
        index = torch.tensor(kept, dtype=torch.long)
        for up in ups:
            _keep(up, index, 0)
        _keep(down, index, 1)
    model.config.intermediate_size = len(full[0])
    return len(full[0])


def parameter_count(model: nn.Module) -> int:
    """Parameters, tied ones counted once."""
    return sum(p.numel() for p in model.parameters())
