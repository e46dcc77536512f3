"""The W&B logger of a run, with epochs counted from 1 as the progress lines, ``metrics.json`` and the report
count them, a summary that holds only what the run puts there, and the job's own command line.

Lightning adds ``epoch`` to every row it logs: while training, the 0-based index of the epoch in progress
(training steps) or just validated (validation metrics); when testing after training, the number of epochs
trained. In W&B rows that are not test rows, ``epoch`` becomes ``index + 1``, so the validation values of
epoch ``e`` (the state after ``e`` epochs of training) sit at ``epoch = e``; test rows are left as they
are, being counts already. ``val/*`` charts use ``epoch`` as their x-axis.

The CSV log keeps Lightning's own column (the 0-based index); its readers add 1
(:mod:`divergence_lab.ground.epoch_log`). Both logs hold the same values; only the W&B axis is shifted.

W&B would copy the last logged value of every history key into the run summary (``val/acc`` of the last
epoch beside the tested checkpoint's ``selected/val_acc``). Every history key is defined with
``summary="none"``, so the summary holds only what :func:`divergence_lab.run.loggers.log_summary` writes.

W&B records the process's command line as the run's ``args``: in a multirun that is the whole sweep
command in every job. While the run starts, the command line is the job's own overrides instead.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.loggers import WandbLogger

EPOCH_KEY = "epoch"
EPOCH_AXIS_PREFIX = "val/"  # the charts drawn against epochs rather than steps
EPOCH_AXIS_METRICS = f"{EPOCH_AXIS_PREFIX}*"
STEP_KEY = "trainer/global_step"  # Lightning's x-axis of every other chart
ALL_METRICS = "*"
NO_SUMMARY = "none"
TEST_PREFIX = "test/"


def counted_epochs(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` with a training-time ``epoch`` index turned into its 1-based count (test rows as is)."""
    shifted = dict(metrics)
    if EPOCH_KEY in shifted and not any(name.startswith(TEST_PREFIX) for name in shifted):
        shifted[EPOCH_KEY] = shifted[EPOCH_KEY] + 1
    return shifted


@contextmanager
def command_line(arguments: Sequence[str]) -> Iterator[None]:
    """``sys.argv`` = the program and ``arguments`` inside the block, restored after it."""
    saved = sys.argv
    sys.argv = [saved[0], *arguments]
    try:
        yield
    finally:
        sys.argv = saved


class CountedEpochsWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` with ``epoch`` counted from 1, no automatic summary, and the job's own
    overrides (``job_overrides``) as the run's command line (module docstring)."""

    _epoch_axis_defined = False

    def __init__(self, *, job_overrides: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._job_overrides = list(job_overrides)
        self._defined: set[str] = set()  # the val/* metrics defined by name so far

    @property
    def experiment(self) -> Any:
        with command_line(self._job_overrides):
            experiment = super().experiment
        if not self._epoch_axis_defined and callable(getattr(experiment, "define_metric", None)):
            experiment.define_metric(STEP_KEY, summary=NO_SUMMARY)
            experiment.define_metric(ALL_METRICS, step_metric=STEP_KEY, step_sync=True, summary=NO_SUMMARY)
            experiment.define_metric(EPOCH_KEY, summary=NO_SUMMARY)
            experiment.define_metric(EPOCH_AXIS_METRICS, step_metric=EPOCH_KEY, summary=NO_SUMMARY)
            self._epoch_axis_defined = True
        return experiment

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._define_epoch_axis(metrics)
        super().log_metrics(counted_epochs(metrics), step)

    def _define_epoch_axis(self, metrics: Mapping[str, float]) -> None:
        """Define each ``val/*`` metric by its own name, with ``epoch`` as its step, the first time it is
        logged: W&B applies a metric's own definition before any glob, and of two matching globs (``*``
        and ``val/*``) it does not say which wins."""
        new = [name for name in metrics if name.startswith(EPOCH_AXIS_PREFIX) and name not in self._defined]
        if not new:
            return
        experiment = self.experiment
        if callable(getattr(experiment, "define_metric", None)):
            for name in new:
                experiment.define_metric(name, step_metric=EPOCH_KEY, summary=NO_SUMMARY)
        self._defined.update(new)
