"""Shared fixtures: a tiny BERT classifier built in-process (with MiniLM's real tokenizer),
a tiny synthetic sentiment dataset, and the real-data directory check."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import torch

from tunelab.runs.resolve import resolve

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, hidden-32 random BERT saved as a Hugging Face directory."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(resolve("minilm")))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def with_lora_everywhere(model):
    """LoRA on query, value and every dense layer, B drawn != 0 so every factor gets a gradient."""
    from tunelab import methods
    from tunelab.config import load_config

    cfg = load_config(None, ["model.name=minilm", "data.train=sst2", "method.name=lora",
                             "method.targets=[query,value,dense]", "output_dir=/tmp/unused"])
    methods.apply(model, cfg.method)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


POS = ["good", "great", "wonderful", "fine", "lovely", "superb", "excellent", "nice"]
NEG = ["bad", "awful", "terrible", "poor", "dreadful", "boring", "horrible", "weak"]
FILL = ["the", "movie", "was", "really", "plot", "acting", "and", "quite", "story"]


def synthetic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(FILL, rng.randint(2, 6)) + [rng.choice(POS if label else NEG)]
        rng.shuffle(words)
        rows.append((" ".join(words), str(label)))
    return rows


@pytest.fixture(scope="session")
def ner_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT fully fine-tuned on the toy NER set (60 steps learn it); tests only read
    it (or write beside it, under its parent)."""
    from ner_fixtures import toy_ner_run

    return toy_ner_run(tiny_model_dir, tmp_path_factory.mktemp("ner"))


def toy_sentiment_files(root: Path, dev: int = 32) -> dict[str, Path]:
    """train.tsv (96 rows) / dev.tsv (`dev` rows) with a header, sentence<TAB>label, a
    learnable toy sentiment task."""
    paths = {}
    for split, n, seed in (("train", 96, 1), ("dev", dev, 2)):
        path = root / f"{split}.tsv"
        lines = ["sentence\tlabel"] + [f"{t}\t{y}" for t, y in synthetic_rows(n, seed)]
        path.write_text("\n".join(lines) + "\n")
        paths[split] = path
    return paths


@pytest.fixture
def tiny_data(tmp_path: Path) -> dict[str, Path]:
    return toy_sentiment_files(tmp_path)


def tiny_config(model_dir: Path, data: dict[str, Path], out: Path, **train) -> dict:
    """A config tree for the tiny model; `train` overrides train.* keys."""
    return {
        "model": {"name": str(model_dir), "max_length": 32},
        "data": {"train": str(data["train"]), "dev": str(data["dev"]),
                 "columns": {"text": "sentence", "label": "label"}},
        "method": {"name": "lora", "r": 4, "alpha": 8, "targets": ["query", "value"]},
        "train": {"batch_size": 8, "lr": 5e-3, "max_steps": 12, "eval_every": 4,
                  "checkpoint_every": 4, "log_every": 1, "seed": 0, **train},
        "output_dir": str(out),
    }


def sigterm_after_step(monkeypatch: pytest.MonkeyPatch, at: int) -> Callable[[], None]:
    """Send this process SIGTERM right after optimizer step `at` (0-based), as a kill between
    checkpoints would; returns the function that restores the real step."""
    from tunelab.train import loop

    real_step = loop.Trainer._step

    def step_then_signal(self, step, trainable):
        out = real_step(self, step, trainable)
        if step == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop.Trainer, "_step", step_then_signal)
    return lambda: monkeypatch.setattr(loop.Trainer, "_step", real_step)



def interrupt_then_resume(tree: dict, out: Path, monkeypatch: pytest.MonkeyPatch, at: int,
                          log=lambda _: None) -> dict:
    """Train the config `tree` into `out`, stopped by SIGTERM after step `at`, then resumed
    to the end; returns the resumed run's summary."""
    from tunelab.config import validate
    from tunelab.recipes.run import train
    from tunelab.train.signals import Interrupted

    tree = {**tree, "output_dir": str(out)}
    restore = sigterm_after_step(monkeypatch, at)
    with pytest.raises(Interrupted):
        train(validate(tree), log=log)
    restore()
    return train(validate(tree), resume=True, log=log)

def real_data_dir() -> Path:
    """../shared/data; under CI=true its absence is a failure, elsewhere a skip."""
    from tunelab.data import data_dir

    path = data_dir()
    if not (path / "sst2" / "train.tsv").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data not found at {path} (CI=true: this must not be skipped)")
        pytest.skip(f"real data not found at {path}")
    return path


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """A tunelab (or torchrun) subprocess that imports this checkout's tunelab."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
