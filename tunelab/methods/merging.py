"""Combining several LoRA adapters into one, with peft's `add_weighted_adapter` semantics.

Two families, as in peft 0.21:
- factor merges (`linear`, `ties`, `dare_linear`, `dare_ties`, `magnitude_prune`) combine the
  A matrices and the B matrices separately, each adapter weighted by sqrt(|w * scaling|) (the
  sign on A). They need equal ranks and are approximations: (sum B_i)(sum A_j) has cross
  terms. With one adapter and weight 1 they give back that adapter exactly (up to rounding).
- delta merges (`svd`, `ties_svd`, `dare_linear_svd`, `dare_ties_svd`,
  `magnitude_prune_svd`) combine the full updates w_i * s_i * B_i A_i, then keep the top
  `rank` singular directions (a re-compression to any rank). `cat` stacks the weighted
  factors, which is exact at rank sum(r_i).
The result always has scaling 1 (lora_alpha = r). TIES (Yadav et al., 2023) keeps each
tensor's top `density` share by magnitude, elects a sign per entry and averages the entries
that agree with it; DARE (Yu et al., 2024) drops entries at random, keeps `density` of them
and rescales the survivors by 1/density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from tunelab.errors import AdapterError

FACTOR_MERGES = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
DELTA_MERGES = ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
COMBINES = FACTOR_MERGES + DELTA_MERGES + ("cat",)
PRUNING = {"ties", "dare_linear", "dare_ties", "magnitude_prune"}  # these need a density

Combine = Literal["linear", "ties", "dare_linear", "dare_ties", "magnitude_prune", "svd",
                  "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd", "cat"]


@dataclass(frozen=True)
class CombineSpec:
    """How to combine adapters; `check` validates it against the adapters' ranks."""

    combine: Combine = "linear"
    density: float | None = None  # share of entries kept by TIES / DARE / magnitude pruning
    rank: int | None = None  # delta merges: the result's rank (default: the largest input rank)
    majority_sign: Literal["total", "frequency"] = "total"
    seed: int = 0  # DARE's random masks

    @property
    def task_merge(self) -> str:
        """The task-tensor merge underneath: `ties_svd` -> `ties`, `svd` -> `linear`."""
        if self.combine == "svd":
            return "linear"
        return self.combine.removesuffix("_svd")

    def check(self, ranks: dict[str, int]) -> int:
        """Validate the spec for adapters of these ranks (name -> r); returns the result's rank."""
        if self.combine not in COMBINES:
            raise AdapterError(f"combine {self.combine!r} is not one of {', '.join(COMBINES)}")
        if self.task_merge in PRUNING:
            if self.density is None or not 0.0 < self.density <= 1.0:
                raise AdapterError(f"combine {self.combine} needs a density in (0, 1], the share "
                                   f"of entries kept (got {self.density}); e.g. --density 0.5")
        elif self.density is not None:
            raise AdapterError(f"density applies to TIES, DARE and magnitude_prune merges, not "
                               f"to {self.combine}")
        if self.rank is not None and self.combine not in DELTA_MERGES:
            raise AdapterError(f"rank applies to the SVD merges ({', '.join(DELTA_MERGES)}); "
                               f"{self.combine} keeps the adapters' rank")
        if self.rank is not None and self.rank < 1:
            raise AdapterError(f"rank must be at least 1 (got {self.rank})")
        if self.combine in FACTOR_MERGES and len(set(ranks.values())) > 1:
            listed = ", ".join(f"{n} has r={r}" for n, r in ranks.items())
            raise AdapterError(f"combine {self.combine} adds A and B matrices entry by entry, so "
                               f"the adapters need one rank ({listed}); use svd (any rank) or cat")
        if self.combine == "cat":
            return sum(ranks.values())
        return self.rank or max(ranks.values())


# ------------------------------------------------------------------- task-tensor merges


def keep_top_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the int(density * numel) entries of largest |t|."""
    if density >= 1.0:
        return t
    k = int(density * t.numel())
    keep = torch.zeros(t.numel(), dtype=torch.bool, device=t.device)
    keep[t.abs().flatten().topk(k).indices] = True
    return t * keep.view(t.shape)


def drop_and_rescale(t: torch.Tensor, density: float, generator: torch.Generator | None) -> torch.Tensor:
    """DARE: keep each entry with probability `density`, scale the kept ones by 1/density."""
    if density >= 1.0:
        return t
    mask = torch.bernoulli(torch.full_like(t, density), generator=generator)
    return t * mask / density


def elect_sign(stacked: torch.Tensor, method: str) -> torch.Tensor:
    """(n, ...) -> bool (n, ...): which entries agree with the elected sign of their position.

    `total` elects the sign of the entries' sum, `frequency` the more frequent sign (ties
    go to +); zero entries never agree."""
    votes = stacked.sum(dim=0) if method == "total" else stacked.sign().sum(dim=0)
    elected = torch.where(votes >= 0, 1.0, -1.0).to(stacked.dtype)
    return stacked.sign() == elected


def merge_task_tensors(tensors: list[torch.Tensor], weights: list[float], how: str,
                       density: float | None = None, majority_sign: str = "total",
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Combine same-shaped tensors: linear, magnitude_prune, ties, dare_linear or dare_ties.

    Pruning acts on each tensor before weighting; the TIES sign vote sees the pruned,
    unweighted tensors, and the kept weighted entries are averaged (a sum divided by how many
    agree), as peft's merge_utils does.
    """
    prunes = how in ("ties", "magnitude_prune", "dare_linear", "dare_ties")
    if prunes and density is None:
        raise AdapterError(f"task-tensor merge {how!r} needs a density")
    if density is not None and how in ("ties", "magnitude_prune"):
        tensors = [keep_top_magnitude(t, density) for t in tensors]
    elif density is not None and how in ("dare_linear", "dare_ties"):
        tensors = [drop_and_rescale(t, density, generator) for t in tensors]
    elif how != "linear":
        raise AdapterError(f"unknown task-tensor merge {how!r}")
    stacked = torch.stack(tensors)  # (n, ...)
    w = torch.tensor(weights, dtype=stacked.dtype, device=stacked.device)
    weighted = stacked * w.view(-1, *([1] * (stacked.dim() - 1)))
    if how in ("ties", "dare_ties"):
        agree = elect_sign(stacked, majority_sign)
        return (weighted * agree).sum(dim=0) / agree.sum(dim=0).clamp(min=1)
    return weighted.sum(dim=0)


# ------------------------------------------------------------------ one layer's factors

Factors = tuple[torch.Tensor, torch.Tensor, float]  # A (r, in), B (out, r), scaling


def combine_factors(parts: list[Factors], weights: list[float], spec: CombineSpec, rank: int,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """New (A (rank, in), B (out, rank)) with scaling 1 from the adapters present at one layer."""
    dtype = parts[0][0].dtype
    if spec.combine == "cat":
        a = torch.cat([w * s * a for (a, _, s), w in zip(parts, weights)], dim=0)  # (sum r, in)
        b = torch.cat([b for _, b, _ in parts], dim=1)  # (out, sum r)
        return _pad(a.to(dtype), b.to(dtype), rank)
    if spec.combine in FACTOR_MERGES:
        roots = [math.sqrt(abs(w * s)) for (_, _, s), w in zip(parts, weights)]
        signs = [1.0 if w * s >= 0 else -1.0 for (_, _, s), w in zip(parts, weights)]
        args = dict(how=spec.task_merge, density=spec.density, majority_sign=spec.majority_sign,
                    generator=generator)
        a = merge_task_tensors([p[0].float() for p in parts], [r * g for r, g in zip(roots, signs)], **args)
        b = merge_task_tensors([p[1].float() for p in parts], roots, **args)
        return a.to(dtype), b.to(dtype)
    deltas = [(b.float() @ a.float()) * s for a, b, s in parts]  # (out, in) each
    delta = merge_task_tensors(deltas, weights, spec.task_merge, spec.density, spec.majority_sign,
                               generator)
    u, sv, vh = torch.linalg.svd(delta, full_matrices=False)  # (out, k), (k,), (k, in)
    k = min(rank, sv.numel())
    return _pad(vh[:k].to(dtype), (u[:, :k] * sv[:k]).to(dtype), rank)


def _pad(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero rows of A / columns of B up to `rank` (a layer may hold fewer directions)."""
    extra = rank - a.shape[0]
    if extra > 0:
        a = torch.cat([a, a.new_zeros(extra, a.shape[1])], dim=0)
        b = torch.cat([b, b.new_zeros(b.shape[0], extra)], dim=1)
    return a, b
