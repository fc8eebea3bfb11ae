"""Fully sharded data parallel (torch FSDP2, `fully_shard`) for models too big to replicate.

Each transformer block is one unit and the loss module is the root, so parameters, gradients
and optimizer state are split across ranks and a block is gathered only while it computes.
Whatever leaves the run is whole: checkpoints, best weights and adapters are written from
gathered parameters and a full optimizer state, so they load in a single process.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(root: nn.Module, model: nn.Module) -> nn.Module:
    """Shard `model`'s blocks (the children of its ModuleLists) and make `root` the FSDP root."""
    blocks = [block for m in model.modules() if isinstance(m, nn.ModuleList) for block in m]
    if not blocks:
        raise ValueError("train.distributed=fsdp: this model has no list of blocks to shard; "
                         "use train.distributed=ddp")
    for block in blocks:
        fully_shard(block)
    fully_shard(root)
    return root


def is_sharded(module: nn.Module) -> bool:
    return any(isinstance(m, FSDPModule) for m in module.modules())


@contextmanager
def gathered(module: nn.Module) -> Iterator[None]:
    """Every unit unsharded (on every rank: a collective): parameters are whole, plain tensors
    inside, so code that reads weights (saving, merging) works unchanged. Writes are lost."""
    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        reshard(module)


def reshard(module: nn.Module) -> None:
    """Back to shards everywhere. FSDP leaves the root gathered after a forward with no
    backward (evaluation); the optimizer and state dicts expect the sharded parameters."""
    for unit in reversed([m for m in module.modules() if isinstance(m, FSDPModule)]):
        unit.reshard()


@torch.no_grad()
def copy_into(param: torch.Tensor, full: torch.Tensor) -> None:
    """Write a whole tensor into a parameter, sharded (DTensor) or not."""
    if isinstance(param, DTensor):
        full = distribute_tensor(full.to(param.dtype), param.device_mesh, param.placements)
    param.copy_(full)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on CPU (a collective; rank 0 gets it). `state_dict()` itself
    returns the shards, even inside `gathered`."""
    return get_model_state_dict(model, options=FULL)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The full optimizer state keyed by parameter name (a collective; rank 0 gets it)."""
    return get_optimizer_state_dict(model, optimizer, options=FULL)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True))
