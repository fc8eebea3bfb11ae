"""Classification metrics (scikit-learn): accuracy, macro-F1, confusion matrix."""

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


# Metrics where larger is better; the loss is the exception.
HIGHER_IS_BETTER = {"accuracy": True, "macro_f1": True, "loss": False}
