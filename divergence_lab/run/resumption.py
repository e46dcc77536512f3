"""What makes a preempted or killed job resume exactly where it stopped.

Four pieces, used by every run:

* ``checkpoints/last.ckpt`` is written at the end of every epoch (see :mod:`divergence_lab.run.pipeline`), and
  ``ckpt_path: auto`` resumes from it;
* :class:`EpochSeeding` re-seeds the global RNGs from ``(seed, epoch)`` when an epoch starts, so that any
  random draw during training (dropout, augmentation) is a function of the epoch, not of the history of the
  process. Lightning checkpoints do not hold RNG states; with this, a resumed run reproduces an
  uninterrupted one (batch order is already a function of ``(seed, epoch)``: see the data modules);
* :class:`RunSummary` keeps the final numbers' ingredients (last training loss, the last epoch and its
  validation metrics) inside every checkpoint; the selected epoch and its validation metrics travel with
  the checkpoint that selects it (:class:`~divergence_lab.run.selection.SelectedCheckpoint`);
* under SLURM exactly one component owns the requeue signal: submitit. It receives USR2 before the time
  limit or on preemption, calls the launcher's checkpoint (which resubmits the same Hydra job, into the
  same run directory) and requeues the job. Lightning's own SLURM requeueing (on USR1) is switched off by
  :func:`cluster_plugins`, so the two never both requeue.
"""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, seed_everything

EPOCH_SEED_STRIDE = 1_000_003


class EpochSeeding(Callback):
    """At the start of epoch ``e``, seed Python, NumPy and torch with ``seed * 1_000_003 + e``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        seed_everything(self.seed * EPOCH_SEED_STRIDE + trainer.current_epoch, workers=True, verbose=False)


class RunSummary(Callback):
    """The numbers ``metrics.json`` needs from the last epoch of training, kept in every checkpoint.

    At the end of each epoch (after its validation) it records the epoch's ``train/loss``, the epoch
    (1-based: epoch ``e`` is the state after ``e`` epochs of training) and its validation metrics. Its state
    travels in ``last.ckpt``: a run resumed from a checkpoint that already holds the final epoch has nothing
    left to train, and still reports exactly what the uninterrupted run did.
    """

    def __init__(self) -> None:
        self.last_train_loss = math.nan
        self.last_epoch = 0
        self.last_validation: dict[str, float] = {}

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        metrics = trainer.callback_metrics
        if "train/loss" in metrics:
            self.last_train_loss = float(metrics["train/loss"])
        self.last_epoch = trainer.current_epoch + 1
        validation = {name: float(value) for name, value in metrics.items() if name.startswith("val/")}
        if validation:
            self.last_validation = validation

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_train_loss": self.last_train_loss,
            "last_epoch": self.last_epoch,
            "last_validation": dict(self.last_validation),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_train_loss = float(state_dict["last_train_loss"])
        self.last_epoch = int(state_dict.get("last_epoch", 0))
        self.last_validation = dict(state_dict["last_validation"])


def cluster_plugins() -> list[Any]:
    """Lightning's SLURM environment without its auto-requeue when running inside a SLURM job, else none."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []
