"""Dev-set predictions and data statistics for a report, for the tasks whose saved run files
cannot show them (classification: the confusion matrix and per-class scores; NER: tagged
sentences). The report computes them from the saved run: it reloads the model the way
`tunelab eval` does and predicts the run's own dev split, read again from its config."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch

from tunelab.config import RunConfig
from tunelab.data.conll import load_conll_splits
from tunelab.data.splits import load_splits
from tunelab.errors import DataError
from tunelab.recipes.translation import translation_pairs
from tunelab.report.rundata import RunFiles
from tunelab.runs.layout import load_run_config
from tunelab.runs.trained import load_trained
from tunelab.tasks.classification import ClassificationTask
from tunelab.tasks.token_classification import TokenClassificationTask


@dataclass
class DataStats:
    header: list[str]  # "", then one column per split
    rows: list[list[Any]]
    notes: list[str]


@dataclass
class ClassPredictions:
    labels: list[str]
    texts: list[str]
    gold: list[int]
    pred: list[int]
    prob: list[float]  # the probability of the predicted label


@dataclass
class TagPredictions:
    words: list[tuple[str, ...]]
    gold: list[list[str]]  # IOB2 per word
    pred: list[list[str]]


def _parts(splits: Any) -> dict[str, list]:
    """The splits a run has, by name: train, dev and test when there is one."""
    parts = {"train": splits.train, "dev": splits.dev}
    return parts | ({"test": splits.test} if splits.test else {})


def _config(run: RunFiles) -> RunConfig:
    return load_run_config(run.dir)


def classification_stats(run: RunFiles) -> tuple[DataStats, list]:
    """Examples per label in each split, and the dev examples (for the predictions)."""

    splits = load_splits(_config(run).data)
    parts = _parts(splits)
    counts = {k: Counter(e.label for e in v) for k, v in parts.items()}
    rows: list[list[Any]] = [[label, *(counts[k][label] for k in parts)]
                             for label in run.info["labels"]]
    rows.append(["all", *(len(v) for v in parts.values())])
    rows.append(["mean words per text", *(f"{sum(len(e.text.split()) for e in v) / len(v):.1f}"
                                          for v in parts.values())])
    return DataStats(["label", *parts], rows, splits.notes), splits.dev


def classification_predictions(run: RunFiles, dev: list) -> ClassPredictions:
    model, tokenizer, info = load_trained(run.dir)
    task = ClassificationTask(info["labels"], info["max_length"], tokenizer.pad_token_id)
    unknown = [e for e in dev if e.label not in task.index]
    if unknown:
        raise DataError(f"{unknown[0].where}: dev label {unknown[0].label!r} is not one of the "
                        f"run's labels ({', '.join(task.labels)}); has the data changed since "
                        "training? (or pass --no-data)")
    encoded = task.encode(tokenizer, dev)
    probs = task.predict(model, encoded, _config(run).train.eval_batch_size,
                         torch.device("cpu")).probs  # (N, n_labels)
    top = probs.max(-1)
    return ClassPredictions(task.labels, [e.text if e.text_pair is None else
                                          f"{e.text} / {e.text_pair}" for e in dev],
                            encoded.labels, top.indices.tolist(), top.values.tolist())


def ner_stats(run: RunFiles) -> tuple[DataStats, list]:
    """Sentences, words and entities per type in each split, and the dev sentences."""
    from seqeval.metrics.sequence_labeling import get_entities

    splits = load_conll_splits(_config(run).data)
    parts = _parts(splits)
    types = sorted({t[2:] for t in run.info["labels"] if t != "O"})
    counts = {k: Counter(kind for s in v for kind, _, _ in get_entities(list(s.tags)))
              for k, v in parts.items()}
    rows: list[list[Any]] = [["sentences", *(len(v) for v in parts.values())],
                             ["words", *(sum(len(s.words) for s in v) for v in parts.values())]]
    rows += [[f"{kind} entities", *(counts[k][kind] for k in parts)] for kind in types]
    return DataStats(["", *parts], rows, splits.notes), splits.dev


def ner_predictions(run: RunFiles, dev: list) -> TagPredictions:
    model, tokenizer, info = load_trained(run.dir)
    task = TokenClassificationTask.from_run_info(tokenizer, info)
    encoded = task.encode(tokenizer, dev)
    tags = task.predict(model, encoded, _config(run).train.eval_batch_size,
                        torch.device("cpu")).tags
    return TagPredictions([s.words for s in dev], [list(s.tags) for s in dev], tags)


def translation_stats(run: RunFiles) -> DataStats:
    """Pairs and mean words per side in each split, as the run read them (limits applied)."""

    d = _config(run).data
    names, pairs = translation_pairs(d)

    def mean_words(rows: list, side: str) -> str:
        return f"{sum(len(getattr(p, side).split()) for p in rows) / max(len(rows), 1):.1f}"

    rows: list[list[Any]] = [["pairs", *(len(v) for v in pairs.values())]]
    rows += [[f"mean words, {lang}", *(mean_words(v, side) for v in pairs.values())]
             for lang, side in ((d.source_lang, "source"), (d.target_lang, "target"))]
    return DataStats(["", *(f"{k} ({names[k]})" for k in pairs)], rows,
                     [f"corpus: {d.path}; the dev pairs give the held-out loss, the test pairs "
                      "BLEU and chrF"])
