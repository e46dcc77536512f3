"""What makes a preempted or killed job resume exactly where it stopped.

Four pieces, used by every run:

* ``checkpoints/last.ckpt`` is written at the end of every epoch (see :mod:`divergence_lab.run.pipeline`), and
  ``ckpt_path: auto`` resumes from it;
* :class:`EpochSeeding` re-seeds the global RNGs from ``(seed, epoch)`` when an epoch starts, so that any
  random draw during training (dropout, augmentation) is a function of the epoch, not of the history of the
  process. Lightning checkpoints do not hold RNG states; with this, a resumed run reproduces an
  uninterrupted one (batch order is already a function of ``(seed, epoch)``: see the data modules);
* :class:`RunSummary` keeps the final numbers' ingredients (last training loss, validation metrics of the
  last and of the best epoch) inside every checkpoint;
* under SLURM exactly one component owns the requeue signal: submitit. It receives USR2 before the time
  limit or on preemption, calls the launcher's checkpoint (which resubmits the same Hydra job, into the
  same run directory) and requeues the job. Lightning's own SLURM requeueing (on USR1) is switched off by
  :func:`cluster_plugins`, so the two never both requeue.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, seed_everything

from divergence_lab.metrics.names import lower_is_better

EPOCH_SEED_STRIDE = 1_000_003


class EpochSeeding(Callback):
    """At the start of epoch ``e``, seed Python, NumPy and torch with ``seed * 1_000_003 + e``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        seed_everything(self.seed * EPOCH_SEED_STRIDE + trainer.current_epoch, workers=True, verbose=False)


class RunSummary(Callback):
    """The numbers ``metrics.json`` needs from training, kept in every checkpoint.

    At the end of each epoch (after its validation) it records the epoch's ``train/loss`` and validation
    metrics, and the validation metrics of the best epoch so far by ``monitor`` (strict improvement, as
    ModelCheckpoint). Its state travels in ``last.ckpt``: a run resumed from a checkpoint that already holds
    the final epoch has nothing left to train, and still reports exactly what the uninterrupted run did.
    """

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.last_train_loss = math.nan
        self.last_validation: dict[str, float] = {}
        self.best_validation: dict[str, float] = {}

    def _improves(self, value: float) -> bool:
        if not self.best_validation:
            return True
        best = self.best_validation[self.monitor]
        return value < best if lower_is_better(self.monitor) else value > best

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        metrics = trainer.callback_metrics
        if "train/loss" in metrics:
            self.last_train_loss = float(metrics["train/loss"])
        validation = {name: float(value) for name, value in metrics.items() if name.startswith("val/")}
        if validation:
            self.last_validation = validation
            if self.monitor in validation and self._improves(validation[self.monitor]):
                self.best_validation = validation

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_train_loss": self.last_train_loss,
            "last_validation": dict(self.last_validation),
            "best_validation": dict(self.best_validation),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_train_loss = float(state_dict["last_train_loss"])
        self.last_validation = dict(state_dict["last_validation"])
        self.best_validation = dict(state_dict["best_validation"])


def cluster_plugins() -> list[Any]:
    """Lightning's SLURM environment without its auto-requeue when running inside a SLURM job, else none."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []
