"""The W&B logger of a run, with epochs counted from 1 as the progress lines, ``metrics.json`` and the report
count them.

Lightning adds ``epoch`` to every row it logs: while training, the 0-based index of the epoch in progress
(training steps) or just validated (validation metrics); when testing after training, the number of epochs
trained. In W&B rows that are not test rows, ``epoch`` becomes ``index + 1``, so the validation values of
epoch ``e`` (the state after ``e`` epochs of training) sit at ``epoch = e``; test rows are left as they
are, being counts already. ``val/*`` charts use ``epoch`` as their x-axis.

The CSV log keeps Lightning's own column (the 0-based index); its readers add 1
(:mod:`divergence_lab.report.curves`). Both logs hold the same values; only the W&B axis is shifted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import WandbLogger

EPOCH_KEY = "epoch"
EPOCH_AXIS_METRICS = "val/*"  # the charts drawn against epochs rather than steps
TEST_PREFIX = "test/"


def counted_epochs(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with a training-time ``epoch`` index turned into its 1-based count (test rows as is)."""
    shifted = dict(metrics)
    if EPOCH_KEY in shifted and not any(name.startswith(TEST_PREFIX) for name in shifted):
        shifted[EPOCH_KEY] = shifted[EPOCH_KEY] + 1
    return shifted


class CountedEpochsWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` with ``epoch`` counted from 1 (module docstring)."""

    _epoch_axis_defined = False

    @property
    def experiment(self) -> Any:
        experiment = super().experiment
        if not self._epoch_axis_defined and callable(getattr(experiment, "define_metric", None)):
            experiment.define_metric(EPOCH_KEY)
            experiment.define_metric(EPOCH_AXIS_METRICS, step_metric=EPOCH_KEY)
            self._epoch_axis_defined = True
        return experiment

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(counted_epochs(metrics), step)
