"""Lightning callbacks that say where a run is: one line per epoch, and the ``testing`` position.

:class:`EpochProgress` logs ``[train] epoch k/N  train/loss …  val/acc …  elapsed …  left ~…`` after every
epoch through the ``divergence_lab`` logger, so the line reaches the console and ``train.log`` whether or not
a terminal is attached. Only rank 0 logs. :class:`TestingPosition` logs one line when testing starts
(``testing the selected checkpoint (epoch 3) on 360 examples``). In a sweep, :func:`labelled_job_output`
puts the job's label in front of every line the job's process logs (console and ``train.log``), so the
lines of parallel jobs can be told apart.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lightning.pytorch import Callback

from divergence_lab.ground.progress import StageProgress, set_position

log = logging.getLogger("divergence_lab")
SWEEP_LOGGERS = "divergence_lab.sweep"  # lines about the whole sweep (k/N jobs ended ...) carry no job label


class LabelledFormatter(logging.Formatter):
    """Formats a record with ``inner``, then prefixes each line with ``[label]`` (not the sweep's lines)."""

    def __init__(self, label: str, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.label, self.inner = label, inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        if record.name.startswith(SWEEP_LOGGERS):
            return text
        return "\n".join(f"[{self.label}] {line}" for line in text.splitlines())


@contextmanager
def labelled_job_output(label: str) -> Iterator[None]:
    """Inside the block, prefix every line of the root logger's handlers (Hydra's console and the job's log
    file) with ``[label]``; the handlers' own formatters come back afterwards (the sequential launcher
    runs the next job, and logs the sweep's own lines, through the same handlers)."""
    handlers = list(logging.getLogger().handlers)
    previous = {handler: handler.formatter for handler in handlers}
    for handler in handlers:
        inner = handler.formatter
        if isinstance(inner, LabelledFormatter):
            inner = inner.inner
        handler.setFormatter(LabelledFormatter(label, inner))
    try:
        yield
    finally:
        for handler, formatter in previous.items():
            handler.setFormatter(formatter)  # type: ignore[arg-type]


class EpochProgress(Callback):
    """One progress line per training epoch of ``stage`` with the epoch's loss and validation metrics.

    ``shown`` maps a label to a logged metric (``{"val acc": "val/acc"}``); by default every validation
    metric and ``train/loss`` under their own names. Validation has run when a training epoch ends, so the
    values are this epoch's.
    """

    def __init__(self, stage: str = "train", shown: Mapping[str, str] | None = None) -> None:
        self.stage, self.shown = stage, shown
        self.progress: StageProgress | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.progress = StageProgress(self.stage, trainer.max_epochs, start=trainer.current_epoch)

    def _values(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        if self.shown is not None:
            return {label: float(metrics[name]) for label, name in self.shown.items() if name in metrics}
        return {
            name: float(value)
            for name, value in sorted(metrics.items())
            if name == "train/loss" or name.startswith("val/")
        }

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.progress is not None and trainer.is_global_zero:
            self.progress.step(trainer.current_epoch + 1, self._values(trainer.callback_metrics))


class TestingPosition(Callback):
    """Names the ``testing`` position, and logs what is tested once :meth:`announce` has said it."""

    def __init__(self) -> None:
        self.line: str | None = None

    def announce(self, which: str, epoch: int | None, examples: int) -> None:
        """Say what the next test is: ``which`` checkpoint (selected, last), its epoch, its examples."""
        at = f" (epoch {epoch})" if epoch is not None else ""
        self.line = f"testing the {which} checkpoint{at} on {examples} examples"

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        set_position("testing")
        if self.line is not None and trainer.is_global_zero:
            log.info(self.line)
