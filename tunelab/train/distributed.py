"""Data-parallel training under torchrun: torch.distributed + DistributedDataParallel
(or FSDP, train.distributed=fsdp, see fsdp.py).

Every rank plans the same global batches (they are a function of seed and epoch) and takes
its slice of each, so a run on N processes sees the same examples per optimizer step as a
single process with the same batch_size. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from tunelab.train.fsdp import shard


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, index: list[int]) -> list[int]:
        return index[self.rank::self.world]

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any (a signal seen by one rank stops all)."""
        if not self.active:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def init() -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(torch.distributed.get_rank(), world, local)


class LossModule(nn.Module):
    """Puts the task's loss behind one forward(), so DDP sees (and syncs) every parameter
    the loss touches, whichever submodules the task calls."""

    def __init__(self, model: nn.Module, task: Any):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch: dict[str, torch.Tensor] | None,
                inside: Callable[[nn.Module], Any] | None = None) -> Any:
        """The loss of `batch`; or `inside(model)`, for work (evaluation) that must run within
        the root's forward, where FSDP has gathered the root's own parameters."""
        return self.task.loss_sum(self.model, batch) if inside is None else inside(self.model)


def wrap(model: nn.Module, task: Any, dist: Dist, strategy: str = "ddp") -> nn.Module:
    module = LossModule(model, task)
    if not dist.active:
        return module
    if strategy == "fsdp":
        return shard(module, model)
    ids = [dist.local_rank] if torch.cuda.is_available() else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
