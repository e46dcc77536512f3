"""The metrics every classifier is evaluated with: accuracy, calibration error, NLL and Brier score."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError


class EvaluationMetrics(nn.Module):
    """Accuracy, 15-bin L1 calibration error, NLL and Brier score of one network's predictions.

    Brier score: mean over samples of ``sum_k (softmax(z)_k - 1[k = y])^2``.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.acc = MulticlassAccuracy(num_classes, average="micro")
        self.ece = MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")
        self.nll = MeanMetric()
        self.brier = MeanMetric()

    def update(self, logits: Tensor, y: Tensor) -> None:
        probs = logits.softmax(-1)
        self.acc(logits, y)
        self.ece(probs, y)
        self.nll(F.cross_entropy(logits, y, reduction="none"))
        self.brier((probs - F.one_hot(y, probs.shape[-1]).to(probs.dtype)).pow(2).sum(-1))

    def named(self, prefix: str) -> dict[str, MeanMetric]:
        """``{f"{prefix}acc": metric, ...}`` for ``LightningModule.log``."""
        return {f"{prefix}{name}": metric for name, metric in self.named_children()}
