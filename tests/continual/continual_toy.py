"""Two toy stages whose best weights conflict, for the continual tests.

Stage "sentiment": a positive word means label 1, a negative word label 0. Stage "colours":
the label is a colour word (red 1, blue 0) and every sentence carries a sentiment word of the
*opposite* label, so fitting stage 2 alone means reading sentiment backwards, while one model
can serve both (colour words decide when present, sentiment otherwise). Sharing one head,
naive training on stage 2 forgets stage 1; keeping stage 1's weights (EWC) or its examples
(replay) finds the joint solution instead."""

from __future__ import annotations

import random
from pathlib import Path

from conftest import FILL, NEG, POS

RED = ["red", "crimson", "scarlet", "pink"]
BLUE = ["blue", "navy", "cyan", "azure"]


def _rows(n: int, seed: int, colours: bool) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILL, rng.randint(2, 4))
        if colours:  # the colour decides; the sentiment word says the opposite
            words += [rng.choice(RED if label else BLUE), rng.choice(NEG if label else POS)]
        else:
            words += [rng.choice(POS if label else NEG)]
        rng.shuffle(words)
        rows.append((" ".join(words), str(label)))
    return rows


def write_stage(root: Path, name: str, colours: bool, n_train: int = 96,
                n_dev: int = 48) -> dict[str, str]:
    """train.tsv / dev.tsv of one toy stage under root/name; its data config."""
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 11), ("dev", n_dev, 12)):
        lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in _rows(n, seed, colours)]
        (out / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return {"train": str(out / "train.tsv"), "dev": str(out / "dev.tsv"),
            "columns": {"text": "sentence", "label": "label"}}


def toy_continual(model_dir: Path, root: Path, out: Path, strategy: dict, seed: int = 0,
                  shared_head: bool = True, steps: int = 40, lr: float = 3e-3,
                  **method) -> dict:
    """A continual config tree: sentiment, then colours, on the tiny model."""
    stages = [{"name": "sentiment", "data": write_stage(root, "sentiment", False)},
              {"name": "colours", "data": write_stage(root, "colours", True)}]
    if shared_head:
        stages[1]["head"] = "sentiment"
    return {"model": {"name": str(model_dir), "max_length": 32},
            "method": method or {"name": "full"},
            "train": {"batch_size": 16, "lr": lr, "max_steps": steps, "log_every": 10,
                      "checkpoint_every": 1000, "warmup_ratio": 0.0, "seed": seed,
                      "device": "cpu"},
            "stages": stages, "strategy": strategy, "output_dir": str(out)}
