"""Which way a metric is better: accuracies up, losses and calibration errors down.

Used to pick the best checkpoint for ``optimized_metric`` and to name the direction in reports. Also the
names of metrics that are not what their split suggests (:data:`BEST_OF_EVALS_ACC`).
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

# OPTIMISTIC: the best test accuracy over evaluations every method.eval_every_steps optimiser steps
# (divergence_lab.metrics.best_of_evals). The test split both picks the model and scores it, so this is
# biased upwards; it exists only to compare with papers that report it (SinKD's GLUE numbers). The honest
# number is test/acc: the checkpoint selected on validation, tested once.
BEST_OF_EVALS_ACC = "test/optimistic_best_of_evals_acc"


def lower_is_better(metric: str) -> bool:
    """True for ``val/nll``, ``test/ece``, ``train/loss`` ...; False for accuracies (``val/acc``)."""
    leaf = metric.rsplit("/", 1)[-1]
    return any(leaf == name or leaf.endswith("_" + name) or leaf.startswith(name) for name in LOWER_IS_BETTER)


def checkpoint_mode(metric: str) -> str:
    """``min`` or ``max``, as Lightning's ModelCheckpoint takes it."""
    return "min" if lower_is_better(metric) else "max"
