"""`tunelab predict`: labels (or entities) for texts from a trained run."""

from __future__ import annotations

from pathlib import Path

from tunelab.commands import ner as ner_commands
from tunelab.errors import DataError
from tunelab.runs.layout import task_runs
from tunelab.runs.named_adapters import load_run


def predict(run_dir: Path, texts: list[str], file: Path | None, adapters: list[str] | None = None,
            use: str | None = None, task: str | None = None) -> list:
    import torch

    runs = task_runs(run_dir, task)
    if len(runs) > 1:
        raise DataError(f"predict: {run_dir} holds the tasks {', '.join(r.name for r in runs)}; "
                        "pick one with --task NAME")
    run_dir = runs[0]
    if file is not None:
        if not file.is_file():
            raise DataError(f"{file}: file not found")
        texts = texts + [t for t in file.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not texts:
        raise DataError("predict: give texts as arguments or --file with one text per line")
    model, tokenizer, info = load_run(run_dir, adapters, use)
    if info["task"] == "token_classification":
        return ner_commands.predict(model, tokenizer, info, texts)
    if info["task"] == "masked_lm":
        raise DataError(f"predict: {run_dir} is a masked_lm run (continued pretraining); score it "
                        "with `tunelab eval`, or fine-tune from it with model.name: {run_dir}")
    if info["task"] != "classification":
        raise DataError(f"predict: {run_dir} is a {info['task']} run; use `tunelab generate`")
    pairs = None
    if info.get("text_pair"):  # the run was trained on (text, text_pair): give "first<TAB>second"
        bad = [t for t in texts if "\t" not in t]
        if bad:
            raise DataError(f"predict: this run classifies text pairs; separate the two texts "
                            f"with a tab (got {bad[0]!r})")
        texts, pairs = zip(*(t.split("\t", 1) for t in texts))
        texts, pairs = list(texts), list(pairs)
    enc = tokenizer(texts, pairs, truncation=True, max_length=info["max_length"], padding=True,
                    return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits.float().softmax(-1)
    out = []
    for text, row in zip(texts, probs):
        k = int(row.argmax())
        out.append((info["labels"][k], float(row[k])))
        print(f"{info['labels'][k]}\t{float(row[k]):.4f}\t{text}")
    return out
