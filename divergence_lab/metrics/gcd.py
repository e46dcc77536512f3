"""Clustering accuracy for generalized category discovery, the "v2" protocol.

Predicted cluster ids are matched to classes by one Hungarian assignment over all classes (scipy's
``linear_sum_assignment`` maximising the number of agreeing samples); then ``acc_all`` is the accuracy
of the mapped predictions over every sample, ``acc_old`` over the samples of known classes
(``y < num_known``) and ``acc_new`` over the novel-class samples.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray, num_known: int) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(
            f"y_true and y_pred must be equal-length 1-d arrays (got {y_true.shape}, {y_pred.shape})"
        )
    size = int(max(y_true.max(), y_pred.max())) + 1
    counts = np.zeros((size, size), dtype=np.int64)
    np.add.at(counts, (y_pred, y_true), 1)
    clusters, classes = linear_sum_assignment(counts, maximize=True)
    mapping = np.empty(size, dtype=int)
    mapping[clusters] = classes
    correct = mapping[y_pred] == y_true
    old = y_true < num_known
    return {
        "acc_all": float(correct.mean()),
        "acc_old": float(correct[old].mean()) if old.any() else float("nan"),
        "acc_new": float(correct[~old].mean()) if (~old).any() else float("nan"),
    }
