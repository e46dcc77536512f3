"""What makes a preempted or killed job resume exactly where it stopped.

Three pieces, used by every run:

* ``checkpoints/last.ckpt`` is written at the end of every epoch (see :mod:`divergence_lab.pipeline`), and
  ``ckpt_path: auto`` resumes from it;
* :class:`EpochSeeding` re-seeds the global RNGs from ``(seed, epoch)`` when an epoch starts, so that any
  random draw during training (dropout, augmentation) is a function of the epoch, not of the history of the
  process. Lightning checkpoints do not hold RNG states; with this, a resumed run reproduces an
  uninterrupted one (batch order is already a function of ``(seed, epoch)``: see the data modules);
* under SLURM exactly one component owns the requeue signal: submitit. It receives USR2 before the time
  limit or on preemption, calls the launcher's checkpoint (which resubmits the same Hydra job, into the
  same run directory) and requeues the job. Lightning's own SLURM requeueing (on USR1) is switched off by
  :func:`cluster_plugins`, so the two never both requeue.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, seed_everything

EPOCH_SEED_STRIDE = 1_000_003


class EpochSeeding(Callback):
    """At the start of epoch ``e``, seed Python, NumPy and torch with ``seed * 1_000_003 + e``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        seed_everything(self.seed * EPOCH_SEED_STRIDE + trainer.current_epoch, workers=True, verbose=False)


def cluster_plugins() -> list[Any]:
    """Lightning's SLURM environment without its auto-requeue when running inside a SLURM job, else none."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []
