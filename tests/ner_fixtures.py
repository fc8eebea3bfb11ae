"""A learnable toy NER set in CoNLL files, and a config for the tiny in-process BERT."""

from __future__ import annotations

import random
from pathlib import Path

FIRST = ["john", "mary", "peter", "anna", "james", "laura"]
LAST = ["smith", "jones", "brown", "taylor", "wilson", "clark"]
CITY = ["paris", "london", "berlin", "madrid", "rome", "vienna"]
ORG = ["google", "microsoft", "intel", "nokia", "toyota", "siemens"]
FILL = ["the", "said", "on", "visited", "today", "and", "met", "in", "with", "a", "report"]


def toy_sentences(n: int, seed: int) -> list[list[tuple[str, str]]]:
    """Sentences of (word, IOB2 tag): fillers around one or two PER / LOC / ORG mentions,
    ending with a full stop."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chunks = [[(w, "O")] for w in rng.sample(FILL, rng.randint(2, 5))]
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(["PER", "LOC", "ORG"])
            if kind == "PER":
                mention = [(rng.choice(FIRST), "B-PER")]
                if rng.random() < 0.6:
                    mention.append((rng.choice(LAST), "I-PER"))
            else:
                mention = [(rng.choice(CITY if kind == "LOC" else ORG), f"B-{kind}")]
            chunks.insert(rng.randint(0, len(chunks)), mention)
        out.append([pair for chunk in chunks for pair in chunk] + [(".", "O")])
    return out


def write_conll(path: Path, sentences: list[list[tuple[str, str]]], docs_every: int = 10) -> Path:
    """CoNLL-2003 layout: `word POS chunk NER`, -DOCSTART- lines, blank lines between sentences."""
    lines = []
    for k, sentence in enumerate(sentences):
        if k % docs_every == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        lines += [f"{w} NN {'B-NP' if i == 0 else 'I-NP'} {t}" for i, (w, t) in enumerate(sentence)]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def toy_ner_files(root: Path) -> dict[str, Path]:
    return {"train": write_conll(root / "train.txt", toy_sentences(160, 1)),
            "dev": write_conll(root / "dev.txt", toy_sentences(40, 2))}


def ner_config(model_dir: Path, data: dict[str, Path], out: Path, method: dict | None = None,
               **train) -> dict:
    """A token-classification config tree for the tiny model; `train` overrides train.* keys."""
    return {
        "task": "token_classification",
        "model": {"name": str(model_dir), "max_length": 32},
        "data": {"train": str(data["train"]), "dev": str(data["dev"])},
        "method": method or {"name": "full"},
        "train": {"batch_size": 8, "lr": 3e-3, "max_steps": 60, "eval_every": 30,
                  "checkpoint_every": 30, "log_every": 5, "seed": 0, **train},
        "output_dir": str(out),
    }


def toy_ner_run(model_dir: Path, root: Path) -> Path:
    """A tiny BERT fully fine-tuned on the toy NER set under `root` (60 steps learn it)."""
    from tunelab.config import validate
    from tunelab.recipes.run import train

    tree = ner_config(model_dir, toy_ner_files(root), root / "run", eval_every=60,
                      checkpoint_every=60)
    train(validate(tree), log=lambda _: None)
    return root / "run"
