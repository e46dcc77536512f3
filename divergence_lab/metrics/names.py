"""Which way a metric is better: accuracies up, losses and calibration errors down.

Used to pick the best checkpoint for ``optimized_metric`` and to name the direction in reports.
"""

from __future__ import annotations

LOWER_IS_BETTER = (
    "loss",
    "nll",
    "ece",
    "brier",
    "error",
    "divergence",
    "time_s",
    "kl_to_teacher",
    "kl_teacher_student",
)


def lower_is_better(metric: str) -> bool:
    """True for ``val/nll``, ``test/ece``, ``train/loss`` ...; False for accuracies (``val/acc``)."""
    leaf = metric.rsplit("/", 1)[-1]
    return any(leaf == name or leaf.endswith("_" + name) or leaf.startswith(name) for name in LOWER_IS_BETTER)


def checkpoint_mode(metric: str) -> str:
    """``min`` or ``max``, as Lightning's ModelCheckpoint takes it."""
    return "min" if lower_is_better(metric) else "max"
