"""AdaLoRA's rank allocator: the StepHook that prunes ranks by importance during training.

Decision for decision it is peft's RankAllocator + AdaLoraModel.update_and_allocate, so a
run here and a peft run with the same weights and gradients keep the same triplets:

- importance of each entry: I = |p * grad|, smoothed (EMA beta1) and its deviation from the
  smoothed value (EMA beta2); entry score = the product of the two;
- a triplet's score = E's score + the mean score of its row of A + that of its column of B;
- budget (total rank over all layers): init_r * layers for steps <= tinit, then a cubic fall
  to target_r * layers at step total_step - tfinal, held after that;
- every deltaT steps in between, the E values of the lowest-scoring triplets are set to 0 so
  that only `budget` remain; after the fall the final choice is re-applied each step;
- penalty: orth_reg_weight * mean over A and B of ||A A^T - I||_F and ||B^T B - I||_F.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from tunelab.errors import ConfigError
from tunelab.methods.adalora_layer import AdaLoraConfig, AdaLoraLinear, check_schedule, final_ranks
from tunelab.methods.hooks import StepHook

PARTS = ("lora_A", "lora_E", "lora_B")
PLOT_FILE = "rank_pattern.png"


class RankAllocator(StepHook):
    def __init__(self, layers: dict[str, AdaLoraLinear], cfg: AdaLoraConfig):
        self.layers, self.cfg = layers, cfg
        self.total_step = cfg.total_step
        self.init_budget = sum(m.r for m in layers.values())
        self.target_budget = cfg.target_r * len(layers)
        self.ema_ipt: dict[str, torch.Tensor] = {}  # "<layer>.lora_A" -> EMA of |p * grad|
        self.ema_unc: dict[str, torch.Tensor] = {}  # ... -> EMA of its deviation
        self.last_reg = 0.0

    # ------------------------------------------------------------------ the schedule
    def start(self, total_steps: int) -> None:
        if self.cfg.rank_pattern:
            raise ConfigError("method.rank_pattern: it describes a trained adapter's kept ranks; "
                              "remove it to train (every layer starts at init_r)")
        self.total_step = self.cfg.total_step or total_steps
        try:
            check_schedule(self.cfg.tinit, self.cfg.tfinal, self.total_step,
                           "method.total_step" if self.cfg.total_step else "the run's steps")
        except ValueError as exc:
            raise ConfigError(f"method.tinit / method.tfinal: {exc}") from None
        for layer in self.layers.values():
            layer.total_step = self.total_step

    def budget(self, step: int) -> tuple[int, bool]:
        """(total rank allowed at `step`, whether to re-allocate at this step): peft's cubic."""
        tinit, tfinal, total = self.cfg.tinit, self.cfg.tfinal, self.total_step or 1
        if step <= tinit:
            return self.init_budget, False
        if step > total - tfinal:
            return self.target_budget, True
        left = 1 - (step - tinit) / (total - tfinal - tinit)
        budget = int((self.init_budget - self.target_budget) * left ** 3 + self.target_budget)
        return budget, step % self.cfg.deltaT == 0

    def after_step(self, step: int) -> dict[str, float]:
        final = (self.total_step or 1) - self.cfg.tfinal
        budget, allocate = self.budget(step)
        if step < final:
            self._update_importance()
            if allocate:
                self._mask_to(budget)
        elif step == final:  # fix the final ranks; the scores are no longer needed
            self._mask_to(budget)
            self.ema_ipt, self.ema_unc = {}, {}
        else:
            self._reapply_masks()
        return {"rank_budget": float(budget), "rank": float(self.rank()), "orth_reg": self.last_reg}

    def rank(self) -> int:
        """Total rank in use now (rows the allocator kept, or all rows before it first ran)."""
        return sum(int(m.kept_rows().sum()) for m in self.layers.values())

    # ------------------------------------------------------------------ importance and masks
    @torch.no_grad()
    def _update_importance(self) -> None:
        b1, b2 = self.cfg.beta1, self.cfg.beta2
        for name, layer in self.layers.items():
            for part in PARTS:
                p = getattr(layer, part)
                key = f"{name}.{part}"
                if key not in self.ema_ipt:
                    self.ema_ipt[key], self.ema_unc[key] = torch.zeros_like(p), torch.zeros_like(p)
                grad = p.grad if p.grad is not None else torch.zeros_like(p)
                ipt = (p * grad).abs().detach()
                self.ema_ipt[key] = b1 * self.ema_ipt[key] + (1 - b1) * ipt
                self.ema_unc[key] = b2 * self.ema_unc[key] + (1 - b2) * (ipt - self.ema_ipt[key]).abs()

    def _score(self, key: str) -> torch.Tensor:
        return self.ema_ipt[key] * self.ema_unc[key]

    def triplet_scores(self) -> dict[str, torch.Tensor]:
        """Per layer (r,): E's score + mean score of A's row + mean score of B's column."""
        out = {}
        for name in self.layers:
            a = self._score(f"{name}.lora_A").mean(dim=1, keepdim=True)  # (r, 1)
            b = self._score(f"{name}.lora_B").mean(dim=0).view(-1, 1)  # (r, 1)
            out[name] = self._score(f"{name}.lora_E").view(-1) + torch.cat([a, b], dim=1).sum(dim=1)
        return out

    @torch.no_grad()
    def _mask_to(self, budget: int) -> None:
        scores = self.triplet_scores()
        drop = self.init_budget - budget
        if drop <= 0:
            return
        threshold = torch.kthvalue(torch.cat(list(scores.values())), k=drop)[0].item()
        for name, layer in self.layers.items():
            layer.rank_mask = scores[name] > threshold
            layer.lora_E.masked_fill_((~layer.rank_mask).view(-1, 1), 0.0)

    @torch.no_grad()
    def _reapply_masks(self) -> None:
        for layer in self.layers.values():
            if layer.rank_mask is not None:
                layer.lora_E.masked_fill_((~layer.rank_mask).view(-1, 1), 0.0)

    # ------------------------------------------------------------------ the penalty
    def extra_loss(self) -> torch.Tensor | None:
        if self.cfg.orth_reg_weight == 0:
            return None
        total, count = None, 0
        for layer in self.layers.values():
            for cov in (layer.lora_A @ layer.lora_A.T, layer.lora_B.T @ layer.lora_B):  # (r, r)
                eye = torch.eye(*cov.shape, dtype=cov.dtype, device=cov.device)
                term = torch.linalg.matrix_norm(cov - eye)  # Frobenius
                total = term if total is None else total + term
                count += 1
        if total is None:
            return None
        reg = total / count
        self.last_reg = float(reg.detach())
        return self.cfg.orth_reg_weight * reg

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"ema_ipt": {k: v.cpu() for k, v in self.ema_ipt.items()},
                "ema_unc": {k: v.cpu() for k, v in self.ema_unc.items()},
                "masks": {n: m.rank_mask.cpu() for n, m in self.layers.items()
                          if m.rank_mask is not None},
                "last_reg": self.last_reg}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        like = {f"{n}.{part}": getattr(m, part) for n, m in self.layers.items() for part in PARTS}
        self.ema_ipt = {k: v.to(like[k]) for k, v in state.get("ema_ipt", {}).items()}
        self.ema_unc = {k: v.to(like[k]) for k, v in state.get("ema_unc", {}).items()}
        for name, layer in self.layers.items():
            mask = state.get("masks", {}).get(name)
            layer.rank_mask = None if mask is None else mask.to(layer.lora_E.device)
        self.last_reg = float(state.get("last_reg", 0.0))

    # ------------------------------------------------------------------ the final pattern
    def finish(self, run_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
        ranks = final_ranks(self.layers)
        total = sum(ranks.values())
        log(f"AdaLoRA final ranks (total {total}, target {self.target_budget}, from "
            f"{self.init_budget}): " + ", ".join(f"{n}={r}" for n, r in ranks.items()))
        plot = plot_ranks(ranks, _budget_history(run_dir), self.cfg, run_dir / PLOT_FILE)
        return {"rank_pattern": ranks, "rank_total": total, "rank_budget_target": self.target_budget,
                "rank_plot": str(plot)}


def _budget_history(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if "rank_budget" in r]


def plot_ranks(ranks: dict[str, int], history: list[dict[str, Any]], cfg: AdaLoraConfig,
               path: Path) -> Path:
    """Left: budget and rank in use against step. Right: the final rank of every layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.18 * len(ranks) + 1.5)),
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    if history:
        steps = [r["step"] for r in history]
        left.plot(steps, [r["rank_budget"] for r in history], label="budget")
        left.plot(steps, [r["rank"] for r in history], "--", label="rank in use")
        left.legend()
    left.set_xlabel("step")
    left.set_ylabel("total rank")
    left.grid(alpha=0.3)
    names = list(ranks)
    right.barh(range(len(names)), [ranks[n] for n in names], color="tab:blue")
    right.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=7)
    right.invert_yaxis()
    right.axvline(cfg.target_r, color="tab:red", ls="--", lw=1, label=f"target_r {cfg.target_r}")
    right.axvline(cfg.init_r, color="gray", ls=":", lw=1, label=f"init_r {cfg.init_r}")
    right.set_xlabel("final rank")
    right.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _short(name: str) -> str:
    """'bert.encoder.layer.3.attention.self.query' -> 'layer.3.attention.self.query'."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[i - 1:])
    return name


__all__ = ["RankAllocator", "plot_ranks"]
