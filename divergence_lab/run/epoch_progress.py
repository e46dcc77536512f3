"""Lightning callbacks that say where a run is: one line per epoch, and the ``testing`` position.

:class:`EpochProgress` logs ``[train] epoch k/N  train/loss …  val/acc …  elapsed …  left ~…`` after every
epoch through the ``divergence_lab`` logger, so the line reaches the console and ``train.log`` whether or not
a terminal is attached. Only rank 0 logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import Callback

from divergence_lab.methods.progress import StageProgress, set_position


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
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        set_position("testing")
