"""Training terms logged at almost no cost per step.

Lightning's ``self.log`` costs about a millisecond per call on a CPU (it moves its per-key state to the
value's device on every call): logging three terms each step took longer than the whole step of the small
CPU presets. :class:`TrainingTermsLogging` keeps each term's epoch sum on the device and hands Lightning
only what reaches an output, with the keys and numbers Lightning gave when every step was logged:

* ``train/<name>_step``: the step's value, on the steps whose metrics a logger writes (every
  ``trainer.log_every_n_steps``) and on every step while a progress bar shows it (callbacks see the last
  logged step's value);
* ``train/<name>_epoch`` for the loggers and ``train/<name>`` for callbacks: the epoch's mean weighted by
  batch size, ``Σ_b n_b·v_b / Σ_b n_b`` over its batches ``b`` of ``n_b`` examples. It reaches Lightning as
  increments — the mean of the batches since the last hand-over, with their example count as its weight —
  after every step the epoch may end on, so Lightning's own mean reduction (and its ``sync_dist`` sum of
  weighted values and weights over ranks) gives that mean whichever step ends the epoch. Handing over more
  often than needed changes nothing.

With ``terms_step_values = False`` only the epoch mean is logged, as ``train/<name>``. A term missing from
some batches is averaged over the batches that have it, as Lightning does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor

PROGRESS_BAR_TERM = "loss"  # the one term a progress bar shows
SUM_DTYPE = torch.float64  # per-epoch sums: no float32 rounding across thousands of steps
FOLD_EVERY = 256  # steps kept as detached values before they are summed (one stack, one product)

Names = tuple[str, ...]


@dataclass
class EpochSums:
    """One epoch's terms not yet handed over to Lightning, per set of term names: the last steps' detached
    values (``pending``), the weighted sums ``Σ n_b·v_b`` of earlier steps, and the counts ``Σ n_b``.

    A step only appends its values; every :data:`FOLD_EVERY` steps, and at a hand-over, they are summed in
    one stack and one matrix-vector product, so a step costs no tensor operation of its own.
    """

    epoch: int
    pending: dict[Names, list[tuple[tuple[Tensor, ...], int]]] = field(default_factory=dict)
    sums: dict[Names, Tensor] = field(default_factory=dict)
    counts: dict[Names, int] = field(default_factory=dict)
    last: dict[str, Tensor] = field(default_factory=dict)

    def add(self, names: Names, values: tuple[Tensor, ...], batch_size: int) -> None:
        pending = self.pending.setdefault(names, [])
        pending.append((values, batch_size))
        self.counts[names] = self.counts.get(names, 0) + batch_size
        self.last = dict(zip(names, values, strict=True))
        if len(pending) >= FOLD_EVERY:
            self.fold(names)

    def fold(self, names: Names) -> None:
        """Sum the pending steps of ``names`` into ``sums``: ``Σ_b n_b·v_b`` in float64."""
        pending = self.pending.pop(names, [])
        if not pending:
            return
        values = torch.stack([value for step, _ in pending for value in step]).to(SUM_DTYPE)
        weights = torch.tensor([size for _, size in pending], dtype=SUM_DTYPE, device=values.device)
        total = weights @ values.view(len(pending), len(names))
        self.sums[names] = total if names not in self.sums else self.sums[names] + total

    def hand_over(self) -> list[tuple[Names, Tensor, int]]:
        """``(names, Σ n_b·v_b / Σ n_b, Σ n_b)`` of everything recorded since the last hand-over; reset."""
        for names in list(self.pending):
            self.fold(names)
        means = [
            (names, (total / self.counts[names]).float(), self.counts[names])
            for names, total in self.sums.items()
        ]
        self.sums, self.counts = {}, {}
        return means


class TrainingTermsLogging(L.LightningModule):
    """Mixin for a LightningModule: call :meth:`record_training_terms` in ``training_step``.

    A subclass that overrides ``on_train_batch_end`` calls ``super().on_train_batch_end(...)``.
    """

    terms_step_values: bool = True  # False: only the epoch means, logged as ``train/<name>``
    terms_sync_dist: bool = True  # reduce over DDP ranks (a sum of weighted values and of weights)
    _epoch_sums: EpochSums | None = None

    def record_training_terms(self, terms: Mapping[str, Tensor], batch_size: int) -> None:
        """Add one batch's ``terms`` (each a scalar mean over ``batch_size`` examples; detached here)."""
        state = self._epoch_sums
        if state is None or state.epoch != self.current_epoch:  # nothing of an earlier epoch carries over
            state = self._epoch_sums = EpochSums(self.current_epoch)
        state.add(tuple(terms), tuple(value.detach() for value in terms.values()), batch_size)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        state = self._epoch_sums
        if state is None or not state.last:
            return
        trainer = self.trainer
        if self.terms_step_values and (_logger_writes(trainer) or trainer.progress_bar_callback is not None):
            for name, value in state.last.items():
                self.log(
                    f"train/{name}_step",
                    value,
                    on_step=True,
                    on_epoch=False,
                    sync_dist=self.terms_sync_dist,
                    prog_bar=name == PROGRESS_BAR_TERM,
                )
        state.last = {}
        if state.counts and _epoch_may_end(trainer, batch_idx):
            self._hand_over_epoch_increment(state)

    def _hand_over_epoch_increment(self, state: EpochSums) -> None:
        suffix = "_epoch" if self.terms_step_values else ""
        for names, means, count in state.hand_over():
            options = {
                "on_step": False,
                "on_epoch": True,
                "sync_dist": self.terms_sync_dist,
                "batch_size": count,
            }
            for name, mean in zip(names, means.unbind(), strict=True):
                self.log(f"train/{name}{suffix}", mean, prog_bar=name == PROGRESS_BAR_TERM, **options)
                if suffix:  # callbacks read the unsuffixed name, as with Lightning's own on_step + on_epoch
                    self.log(f"train/{name}", mean, logger=False, **options)


def _logger_writes(trainer: L.Trainer) -> bool:
    """Whether the loggers write this step's metrics (Lightning's own test, evaluated where it is)."""
    return bool(trainer._logger_connector.should_update_logs or trainer.fast_dev_run)


def _epoch_may_end(trainer: L.Trainer, batch_idx: int) -> bool:
    """True after any step the training epoch may end on: its last batch, the batch limit, ``max_steps``,
    a stop request, or a validation inside the epoch (whose callbacks may request a stop)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress
    val_every = trainer.val_check_batch
    return (
        progress.is_last_batch
        or trainer.should_stop
        or progress.current.ready >= trainer.num_training_batches
        or 0 <= trainer.max_steps <= trainer.global_step
        or (isinstance(val_every, int) and val_every > 0 and (batch_idx + 1) % val_every == 0)
    )
