"""Setup: what a recipe hands the loop (model, tokenizer, task, encoded train and dev data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Setup:
    model: Any
    tokenizer: Any
    task: Any
    train: Any
    dev: Any
    model_path: Path
    info: dict[str, Any] = field(default_factory=dict)  # stored in run.json
    examples: Any = None  # the training examples before encoding (a teacher re-encodes them)
