"""`tunelab predict`: labels (or entities) for texts from a trained run, or from its ONNX
export (`tunelab export RUN --to onnx OUT`), scored by the same code."""

from __future__ import annotations

from pathlib import Path

from tunelab.commands import images as image_commands
from tunelab.commands import ner as ner_commands
from tunelab.errors import DataError
from tunelab.runs.layout import read_run_info, task_runs
from tunelab.runs.named_adapters import load_run
from tunelab.runs.onnx_model import is_onnx_export, load_onnx_run
from tunelab.tasks.inference import classify


def predict(run_dir: Path, texts: list[str], file: Path | None, adapters: list[str] | None = None,
            use: str | None = None, task: str | None = None) -> list:
    onnx = is_onnx_export(run_dir)
    if not onnx:
        runs = task_runs(run_dir, task)
        if len(runs) > 1:
            raise DataError(f"predict: {run_dir} holds the tasks {', '.join(r.name for r in runs)}; "
                            "pick one with --task NAME")
        run_dir = runs[0]
    if file is not None:
        if not file.is_file():
            raise DataError(f"{file}: file not found")
        texts = texts + [t for t in file.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not onnx and read_run_info(run_dir)["task"] == "image_classification":
        return image_commands.predict(run_dir, texts, adapters, use)  # texts: image paths
    if not texts:
        raise DataError("predict: give texts as arguments or --file with one text per line")
    model, tokenizer, info = (load_onnx_run(run_dir, adapters, use, task) if onnx
                              else load_run(run_dir, adapters, use))
    if info["task"] == "token_classification":
        return ner_commands.predict(model, tokenizer, info, texts)
    if info["task"] == "masked_lm":
        raise DataError(f"predict: {run_dir} is a masked_lm run (continued pretraining); score it "
                        "with `tunelab eval`, or fine-tune from it with model.name: {run_dir}")
    if info["task"] != "classification":
        raise DataError(f"predict: {run_dir} is a {info['task']} run; use `tunelab generate`")
    try:
        results = classify(model, tokenizer, info, texts)
    except DataError as exc:
        raise DataError(f"predict: {exc}") from None
    shown = [t.split("\t", 1)[0] for t in texts] if info.get("text_pair") else texts
    out = []
    for text, (label, prob, _) in zip(shown, results):
        out.append((label, prob))
        print(f"{label}\t{prob:.4f}\t{text}")
    return out
