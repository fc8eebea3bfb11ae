"""Classification metrics (scikit-learn): accuracy, macro-F1, confusion matrix; entity-level
NER metrics (seqeval)."""

from __future__ import annotations

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(preds: list[int], gold: list[int], n_labels: int) -> dict[str, float]:
    """Macro-F1 averages over the labels that occur in gold or predictions: a class absent
    from a subset is not scored as F1 = 0."""
    present = sorted(set(gold) | set(preds))
    return {"accuracy": float(accuracy_score(gold, preds)),
            "macro_f1": float(f1_score(gold, preds, average="macro", labels=present,
                                       zero_division=0))}


def confusion(preds: list[int], gold: list[int], n_labels: int) -> list[list[int]]:
    return confusion_matrix(gold, preds, labels=list(range(n_labels))).tolist()


def format_confusion(matrix: list[list[int]], labels: list[str]) -> str:
    """Rows are gold labels, columns predictions."""
    width = max(6, *(len(label) for label in labels), *(len(str(v)) for r in matrix for v in r))
    head = " " * width + " | " + " ".join(f"{label:>{width}}" for label in labels) + "   (predicted)"
    rows = [f"{label:>{width}} | " + " ".join(f"{v:>{width}}" for v in row)
            for label, row in zip(labels, matrix)]
    return "\n".join([head, "-" * len(head)] + rows)


def ner_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision / recall / F1 (micro over entities, and per type) by seqeval in
    its default mode (the conlleval rules: an I-X after O opens an entity), plus token
    accuracy over words. Tags are IOB2 strings, one list per sentence."""
    from seqeval.metrics import (
        accuracy_score,
        classification_report,
        f1_score,
        precision_score,
        recall_score,
    )

    tagged = any(t != "O" for rows in (gold, pred) for row in rows for t in row)
    report = classification_report(gold, pred, output_dict=True, zero_division=0) if tagged else {}
    per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                    "f1": float(v["f1-score"]), "support": int(v["support"])}
                for k, v in report.items() if not k.endswith(" avg")}
    return {"f1": float(f1_score(gold, pred, zero_division=0)),
            "precision": float(precision_score(gold, pred, zero_division=0)),
            "recall": float(recall_score(gold, pred, zero_division=0)),
            "token_accuracy": float(accuracy_score(gold, pred)), "per_type": per_type}


# Metrics where larger is better; the loss is the exception.
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "f1": True, "token_accuracy": True,
                    "mean": True,  # multitask: the mean of the tasks' metrics
                    "loss": False}


def print_classification_scores(name: str, count: str, pred: list[int], gold: list[int],
                                labels: list[str]) -> dict[str, float]:
    """`tunelab eval`'s lines for a classifier (text or images): accuracy, macro-F1 and the
    confusion matrix, printed under `name: count`; returns the scores."""
    scores = classification_metrics(pred, gold, len(labels))
    print(f"{name}: {count}")
    print(f"accuracy: {scores['accuracy']:.4f}")
    print(f"macro-F1: {scores['macro_f1']:.4f}")
    print("confusion matrix (rows: gold):")
    print(format_confusion(confusion(pred, gold, len(labels)), labels))
    return scores
