"""On two toy stages whose best weights conflict (continual_toy.py), naive sequential
training forgets stage 1, and EWC and replay forget measurably less, over three seeds."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from continual_toy import toy_continual

from tunelab.continual.config import validate_continual
from tunelab.continual.run import continual

SEEDS = (0, 1, 2)
STRATEGIES = {"naive": {"name": "naive"},
              "ewc": {"name": "ewc", "strength": 10000, "fisher_examples": 32},
              "replay": {"name": "replay", "per_stage": 32, "batch": 8}}


def drops(tiny_model_dir: Path, tmp_path: Path, strategy: dict) -> list[float]:
    """Stage 1's score just after it trained minus after stage 2, per seed."""
    out = []
    for seed in SEEDS:
        tree = toy_continual(tiny_model_dir, tmp_path / "data", tmp_path / f"{strategy['name']}"
                             f"-{seed}", strategy, seed, steps=80, lr=5e-3)
        s = continual(validate_continual(tree), log=lambda _: None)
        r = s["matrix"]
        assert s["bwt"] == r[1][0] - r[0][0]  # BWT with two stages: stage 1's drop
        assert r[0][0] >= 0.9  # stage 1 was learned before it could be forgotten
        out.append(r[0][0] - r[1][0])
    return out


def test_naive_forgets_and_ewc_and_replay_forget_less(tiny_model_dir: Path,
                                                      tmp_path: Path) -> None:
    forgot = {name: mean(drops(tiny_model_dir, tmp_path, s)) for name, s in STRATEGIES.items()}
    assert forgot["naive"] >= 0.4, forgot  # naive training measurably forgets stage 1
    assert forgot["ewc"] <= forgot["naive"] - 0.15, forgot
    assert forgot["replay"] <= forgot["naive"] - 0.15, forgot
