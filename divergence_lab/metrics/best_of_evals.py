"""The best test accuracy over evaluations every ``k`` optimiser steps: an optimistic number, by design.

Some official training scripts (SinKD's ``glue_train.py`` among them) evaluate on GLUE's dev set every few
optimiser steps and report the best score seen. The same split then both picks the model and scores it, so
that number is biased upwards: it is the maximum of many noisy estimates, not the estimate of one model
chosen without the evaluation labels. :class:`BestOfEvaluations` reproduces it for comparison with such
papers; the honest numbers (``test/acc`` of the checkpoint selected on validation, tested once) are
reported beside it unchanged.

Every ``k`` optimiser steps (global steps ``k, 2k, ...``, after the step) the trained network is evaluated
on the data module's test split (for GLUE, the labelled ``dev.tsv``):

    acc_s = (1/N) Σ_i [argmax_c f_s(x_i)_c = y_i]

and when the run is tested ``max_s acc_s`` is logged as ``test/optimistic_best_of_evals_acc``
(:data:`~divergence_lab.metrics.names.BEST_OF_EVALS_ACC`). The evaluations leave training as it was: the
network's train/eval modes are restored and the random streams the test loader draws from are given back,
so a run's honest numbers are the same with the evaluations on or off. They are kept in the checkpoints,
and merged by step when one is restored (the tested checkpoint is an earlier state than the run's end: its
evaluations are a prefix of the run's).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import nn

from divergence_lab.metrics.names import BEST_OF_EVALS_ACC

log = logging.getLogger("divergence_lab")
TRAINED_NETWORK = ""  # the key of the trained network in ClassifierModule.evaluated_networks()


class BestOfEvaluations(L.Callback):
    """Evaluate the trained network on the test split every ``every_steps`` optimiser steps; log the best
    accuracy when the run is tested. ``evaluations`` maps each evaluated global step to its accuracy."""

    def __init__(self, every_steps: int) -> None:
        if isinstance(every_steps, bool) or not isinstance(every_steps, int) or every_steps < 1:
            raise ValueError(f"every_steps must be an integer >= 1 (got {every_steps!r})")
        self.every_steps = every_steps
        self.evaluations: dict[int, float] = {}

    def due(self, step: int) -> bool:
        """Whether global step ``step`` is one of ``k, 2k, ...`` and not evaluated yet (with gradient
        accumulation several batches end on the same step)."""
        return step > 0 and step % self.every_steps == 0 and step not in self.evaluations

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        step = trainer.global_step
        if self.due(step):
            self.evaluations[step] = self.test_accuracy(trainer, pl_module)

    def test_accuracy(self, trainer: L.Trainer, pl_module: Any) -> float:
        """The trained network's accuracy on the whole test split, in eval mode and without gradients."""
        network = pl_module.evaluated_networks()[TRAINED_NETWORK]
        with preserved_modes(pl_module), torch.random.fork_rng(devices=[]), torch.no_grad():
            pl_module.eval()
            correct, total = 0, 0
            for batch in trainer.datamodule.test_dataloader():
                x, y = move_data_to_device(batch, pl_module.device)
                with trainer.precision_plugin.forward_context():
                    predicted = network(x).float().argmax(dim=-1)
                correct += int((predicted == y).sum())
                total += len(y)
        return correct / total

    def best(self) -> tuple[int, float] | None:
        """``(step, accuracy)`` of the best evaluation (the earliest among ties); None before the first."""
        if not self.evaluations:
            return None
        step = max(sorted(self.evaluations), key=lambda s: self.evaluations[s])
        return step, self.evaluations[step]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        found = self.best()
        if found is None:
            log.warning(
                "%s not recorded: no evaluation ran (the run took %d optimiser steps, evaluations every %d)",
                BEST_OF_EVALS_ACC,
                trainer.global_step,
                self.every_steps,
            )
            return
        step, accuracy = found
        pl_module.log(BEST_OF_EVALS_ACC, accuracy)
        log.info(
            "%s = %.4f at step %d, best of %d evaluations every %d steps (optimistic: the test split both "
            "picks and scores it)",
            BEST_OF_EVALS_ACC,
            accuracy,
            step,
            len(self.evaluations),
            self.every_steps,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"evaluations": dict(self.evaluations)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Merge a checkpoint's evaluations with those held now (the ones held now win at a shared step)."""
        self.evaluations = {**state_dict["evaluations"], **self.evaluations}


@contextmanager
def preserved_modes(module: nn.Module) -> Iterator[None]:
    """Give every submodule of ``module`` back the train/eval mode it had on entry."""
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    try:
        yield
    finally:
        for submodule, training in modes:
            submodule.training = training
