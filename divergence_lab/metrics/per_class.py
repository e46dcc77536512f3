"""Accuracy per class and the confusion matrix of a network's test predictions.

The confusion matrix ``M`` (``C × C`` counts) has ``M[i, j]`` = the number of test examples of true class
``i`` predicted as class ``j`` (prediction = ``argmax`` of the logits); the accuracy of class ``i`` is its
recall ``M[i, i] / Σ_j M[i, j]``, undefined (``None``) for a class without test examples. The counts are a
torchmetrics state (summed over batches and, under DDP, over processes).

A module that counts its test predictions satisfies :class:`CountsTestClasses`; the run layer then records
the per-class accuracies in ``metrics.json`` and the matrix in ``confusion.json`` (:func:`confusion_record`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class CountsTestClasses(Protocol):
    def test_class_counts(self) -> Tensor:
        """The ``C × C`` confusion matrix of the last test (rows: true class, columns: predicted class)."""
        ...


def per_class_accuracy(counts: Tensor) -> list[float | None]:
    """``[M[i, i] / Σ_j M[i, j] for each class i]``, ``None`` where class ``i`` has no example."""
    counts = counts.double()
    totals = counts.sum(dim=1).tolist()
    hits = counts.diagonal().tolist()
    return [hit / total if total else None for hit, total in zip(hits, totals, strict=True)]


def confusion_record(counts: Tensor, split: str = "test") -> dict[str, Any]:
    """The content of ``confusion.json``: the matrix of ``split`` with its axes named."""
    return {
        "split": split,
        "rows": "true class",
        "columns": "predicted class",
        "classes": list(range(counts.shape[0])),
        "counts": counts.long().tolist(),
    }
