"""Checkpoints: trainable weights, optimizer, scheduler, RNG and loop state, written atomically.

Each checkpoint is filled under a hidden temp name (`.step-NNNNNNN.tmpPID`), fsynced file by
file and as a directory, then renamed to `step-NNNNNNN`; `list_checkpoints` (what --resume
reads) sees only those final names, so a process killed mid-write (SIGKILL included) leaves
the previous checkpoint as the newest. Older ones are pruned only after the new one is in
place. best/ holds one file, replaced by an atomic rename. A full disk is a CheckpointError
naming the file; the previous checkpoint stays.

Only parameters that train are stored (the frozen base is re-loaded from the model), so a
LoRA checkpoint is small. Files are safetensors and a weights_only torch file: nothing is
unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.errors import CheckpointError
from tunelab.io import DiskFullError, atomic_dir, atomic_write, fault_point, recover_dir
from tunelab.train.fsdp import copy_into, load_optimizer_state, optimizer_state

WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "state.json"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, path: Path) -> None:
    state = load_file(str(path))
    params = dict(model.named_parameters())
    wanted = {n for n, p in params.items() if p.requires_grad}
    if set(state) != wanted:
        diff = sorted(set(state) ^ wanted)[:3]
        raise CheckpointError(f"{path}: its parameters do not match this model's trainable ones "
                              f"(e.g. {', '.join(diff)}); was it written with another method?")
    for name, tensor in state.items():
        copy_into(params[name], tensor)


def save_weights(model: nn.Module, directory: Path) -> None:
    """Trainable weights alone (the best model so far), replaced atomically: one file, so
    no moment exists without a whole best/ (a directory swap would have one)."""
    recover_dir(directory)  # a best/ written by an older tunelab as a directory swap
    directory.mkdir(parents=True, exist_ok=True)
    state = trainable_state(model)
    try:
        atomic_write(directory / WEIGHTS, lambda p: save_file(state, str(p)))
    except DiskFullError as exc:
        raise CheckpointError(str(exc)) from None


def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any], keep: int,
                    optimizer_by_name: dict[str, Any] | None = None,
                    hook_state: dict[str, Any] | None = None) -> Path:
    """`optimizer_by_name`: a full state keyed by parameter name (what FSDP runs store, and
    any process can load); the optimizer's own state_dict otherwise. `hook_state`: a method's
    training-time state (AdaLoRA's importance averages and masks)."""
    path = root / f"step-{step:07d}"
    optim = {"optimizer_by_name": optimizer_by_name} if optimizer_by_name is not None \
        else {"optimizer": optimizer.state_dict()}
    try:
        _write_checkpoint(path, model, optim, scheduler, state, step, hook_state)
    except DiskFullError as exc:
        raise CheckpointError(f"{exc} (checkpoint {path.name} was not written; the run's "
                              "earlier checkpoints are intact)") from None
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for debris in root.glob(".step-*"):  # temp dirs of writes killed before their rename
        shutil.rmtree(debris, ignore_errors=True)
    return path


def _write_checkpoint(path: Path, model: nn.Module, optim: dict[str, Any], scheduler: Any,
                      state: dict[str, Any], step: int, hook_state: dict[str, Any] | None) -> None:
    with atomic_dir(path) as tmp:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        fault_point("checkpoint:half")  # weights written, optimizer and state not yet
        torch.save({**optim, "scheduler": scheduler.state_dict(), "hook": hook_state or {},
                    "rng_torch": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   tmp / OPTIMIZER)
        full = {**state, "step": step, "rng_python": _py_rng_to_json(random.getstate())}
        (tmp / STATE).write_text(json.dumps(full, indent=1))


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints (an interrupted write never gets its final name), oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if p.is_dir() and (p / STATE).is_file())


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> dict[str, Any]:
    try:
        state = json.loads((path / STATE).read_text())
        load_trainable(model, path / WEIGHTS)
        extra = torch.load(path / OPTIMIZER, weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); "
                              "delete it to resume from the one before") from None
    if "optimizer_by_name" in extra:
        load_optimizer_state(model, optimizer, extra["optimizer_by_name"])
    else:
        optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng_torch"])
    if extra["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(extra["rng_cuda"])
    random.setstate(_py_rng_from_json(state.pop("rng_python")))
    return {**state, "hook": extra.get("hook", {})}


def _py_rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_rng_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return version, tuple(internal), gauss


class RunCheckpoints:
    """A run's checkpoints/ and best/, as the loop writes and reads them. Rank 0 writes
    (DDP keeps every rank's weights identical; FSDP gathers its shards first, a collective:
    every rank enters `gathered`); the others wait for it."""

    def __init__(self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: Any, dist: Any, gathered: Callable[[], Any], sharded: bool,
                 keep: int):
        self.dir, self.best_dir = run_dir / "checkpoints", run_dir / "best"
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.dist, self.gathered, self.sharded, self.keep = dist, gathered, sharded, keep

    def save(self, step: int, loop: dict[str, Any],
             hook_state: Callable[[], dict[str, Any]]) -> Path:
        """Checkpoint `step` with the loop state `loop` and the method hook's state."""
        path = self.dir / f"step-{step:07d}"
        by_name = optimizer_state(self.model, self.optimizer) if self.sharded else None
        with self.gathered():
            if self.dist.main:
                save_checkpoint(self.dir, step, self.model, self.optimizer, self.scheduler,
                                {"loop": loop}, self.keep, by_name, hook_state())
        self.dist.barrier()
        return path

    def load_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """(path, state) of the newest checkpoint, loaded into model, optimizer, scheduler
        and the RNGs; None when there is none."""
        found = list_checkpoints(self.dir)
        if not found:
            return None
        return found[-1], load_checkpoint(found[-1], self.model, self.optimizer, self.scheduler)

    def save_best(self) -> None:
        with self.gathered():
            if self.dist.main:
                save_weights(self.model, self.best_dir)

    def restore_best(self) -> bool:
        self.dist.barrier()  # rank 0 wrote it
        best = self.best_dir / WEIGHTS
        if not best.is_file():
            return False
        load_trainable(self.model, best)
        return True
