"""`tunelab eval` and `tunelab predict` for a token-classification (NER) run."""

from __future__ import annotations

from typing import Any

import torch

from tunelab.config import RunConfig, TokenClassificationRun
from tunelab.data.conll import (
    check_types,
    load_conll_splits,
    read_like_training,
)
from tunelab.data.splits import eval_items
from tunelab.errors import CheckpointError, DataError
from tunelab.tasks.inference import extract_entities
from tunelab.tasks.token_classification import Entity, TokenClassificationTask


def evaluate(cfg: RunConfig, model, tokenizer, info: dict[str, Any], data: str | None,
             split: str) -> dict:
    """Entity-level P/R/F1 per type and overall, and token accuracy, on dev, test or a file."""
    if not isinstance(cfg, TokenClassificationRun):
        raise CheckpointError(f"run.json says token_classification but config.yaml is a "
                              f"{cfg.task} config; was the run directory edited?")
    sentences, name = eval_items(cfg, data, split, load_conll_splits, read_like_training)
    if data:
        check_types(sentences, info["labels"])
    task = TokenClassificationTask.from_run_info(tokenizer, info)
    encoded = task.encode(tokenizer, sentences)
    scores = task.evaluate(model, encoded, cfg.train.eval_batch_size, torch.device("cpu"))
    words = sum(len(s.words) for s in sentences)
    entities_n = sum(t["support"] for t in scores["per_type"].values())
    print(f"{name}: {len(sentences)} sentences, {words} words, {entities_n} entities")
    print(format_ner_table(scores))
    print(f"token accuracy: {scores['token_accuracy']:.4f}  loss: {scores['loss']:.4f}")
    if encoded.lost_words:
        print(f"({encoded.lost_words} words lie beyond model.max_length {info['max_length']} "
              "and count as predicted O)")
    return scores


def format_ner_table(scores: dict) -> str:
    """Per-type and overall (micro) entity precision / recall / F1 with gold support."""
    rows = [(k, v) for k, v in sorted(scores["per_type"].items())]
    rows.append(("overall", {"precision": scores["precision"], "recall": scores["recall"],
                             "f1": scores["f1"],
                             "support": sum(v["support"] for v in scores["per_type"].values())}))
    width = max(7, *(len(k) for k, _ in rows))
    lines = [f"{'entity':<{width}}  precision  recall      f1  support"]
    for k, v in rows:
        lines.append(f"{k:<{width}}  {v['precision']:>9.4f}  {v['recall']:>6.4f}  {v['f1']:.4f}  "
                     f"{v['support']:>7}")
    return "\n".join(lines)


def predict(model, tokenizer, info: dict[str, Any], texts: list[str]) -> list[list[Entity]]:
    """Print each text and its entities: type, the words as written, [start, end) characters."""
    try:
        pred = extract_entities(model, tokenizer, info, texts)
    except DataError as exc:
        raise DataError(f"predict: {exc}") from None
    for text, found in zip(texts, pred.entities):
        print(text)
        if not found:
            print("  (no entities)")
        kind_w = max((len(e.type) for e in found), default=0)
        text_w = max((len(e.text) + 2 for e in found), default=0)
        for e in found:
            quoted = f'"{e.text}"'
            print(f"  {e.type:<{kind_w}}  {quoted:<{text_w}}  [{e.start}, {e.end})")
    if pred.lost_words:
        print(f"({pred.lost_words} words lie beyond max_length {info['max_length']} and were "
              "not tagged)")
    return pred.entities
