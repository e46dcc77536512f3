"""Lightning callbacks that say where a run is: one line per epoch, and the ``testing`` position.

:class:`EpochProgress` logs ``[train] epoch k/N  train/loss …  val/acc …  elapsed …  left ~…`` after every
epoch through the ``divergence_lab`` logger, so the line reaches the console and ``train.log`` whether or not
a terminal is attached. Only rank 0 logs.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback

from divergence_lab.progress import StageProgress, set_position


class EpochProgress(Callback):
    """One progress line per training epoch with the epoch's loss and validation metrics."""

    def __init__(self) -> None:
        self.progress: StageProgress | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.progress = StageProgress("train", trainer.max_epochs, start=trainer.current_epoch)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.progress is None:
            return
        shown = {
            name: float(value)
            for name, value in sorted(trainer.callback_metrics.items())
            if name == "train/loss" or name.startswith("val/")
        }
        if trainer.is_global_zero:
            self.progress.step(trainer.current_epoch + 1, shown)


class TestingPosition(Callback):
    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        set_position("testing")
