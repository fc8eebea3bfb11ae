"""The strategies against forgetting, one file each, by the name the config gives."""

from __future__ import annotations

from tunelab.continual.strategies.adapter_per_stage import AdapterPerStage
from tunelab.continual.strategies.base import StagePlan, Strategy
from tunelab.continual.strategies.ewc import Ewc
from tunelab.continual.strategies.lwf import Lwf
from tunelab.continual.strategies.naive import Naive
from tunelab.continual.strategies.replay import Replay

STRATEGIES: dict[str, type[Strategy]] = {
    "naive": Naive,
    "replay": Replay,
    "ewc": Ewc,
    "lwf": Lwf,
    "adapter-per-stage": AdapterPerStage,
}

__all__ = ["STRATEGIES", "StagePlan", "Strategy"]
