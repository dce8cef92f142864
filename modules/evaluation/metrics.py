"""Classification metrics computed from saved predictions (no model needed)."""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(labels: Sequence[int], preds: Sequence[int], num_labels: int) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "f1_macro": float(f1_score(labels, preds, average="macro", labels=list(range(num_labels)), zero_division=0)),
    }


def confusion(labels: Sequence[int], preds: Sequence[int], num_labels: int) -> list[list[int]]:
    return confusion_matrix(labels, preds, labels=list(range(num_labels))).tolist()
