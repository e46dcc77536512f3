"""Deliver a signal to this very process at a chosen moment of a run, through the run's own hooks.

A *phase* names the moment:

* ``teacher``, ``cts search``, ``fit``: after the first step of that stage (teacher epoch 1, search epoch 1,
  training epoch 1), when its progress line is logged;
* ``after final checkpoint``: after the last epoch's checkpoints were written, before testing starts;
* ``testing``: once testing has started;
* ``stage saved``: right after a method's stage wrote its output to the run folder (not in ``PHASES``:
  only the kill test of stages uses it).

The signal is real (``os.kill`` of the own pid), so the run's handlers see exactly what a user's Ctrl-C,
a ``kill`` or SLURM's cancellation would deliver.
"""

from __future__ import annotations

import os
from typing import Any

STAGE_OF_PHASE = {"teacher": "teacher", "cts search": "cts search", "fit": "train"}
PHASES = (*STAGE_OF_PHASE, "after final checkpoint", "testing")
STAGE_SAVED = "stage saved"
FIRST_STEP = 1


def _send(signum: int) -> None:
    os.kill(os.getpid(), signum)


def install(phase: str, signum: int, patch: Any) -> None:
    """Arrange for ``signum`` at ``phase``; ``patch(owner, name, replacement)`` swaps an attribute."""
    from lightning.pytorch import Trainer

    from divergence_lab.ground.progress import StageProgress, current_position
    from divergence_lab.run.epoch_progress import TestingPosition

    if phase in STAGE_OF_PHASE:
        original_step = StageProgress.step

        def step(self: StageProgress, done: int, values: Any = None) -> str:
            line = original_step(self, done, values)
            if self.stage == STAGE_OF_PHASE[phase] and done == FIRST_STEP:
                _send(signum)
            return line

        patch(StageProgress, "step", step)
    elif phase == "after final checkpoint":
        original_test = Trainer.test

        def test(self: Trainer, *args: Any, **kwargs: Any) -> Any:
            if current_position().startswith("the end of training"):  # the student's test, not the teacher's
                _send(signum)
            return original_test(self, *args, **kwargs)

        patch(Trainer, "test", test)
    elif phase == "testing":
        original_start = TestingPosition.on_test_start

        def on_test_start(self: TestingPosition, trainer: Any, pl_module: Any) -> None:
            original_start(self, trainer, pl_module)
            _send(signum)

        patch(TestingPosition, "on_test_start", on_test_start)
    elif phase == STAGE_SAVED:
        from divergence_lab.run import stages

        original_save = stages._save

        def save(path: Any, content: Any) -> None:
            original_save(path, content)
            _send(signum)

        patch(stages, "_save", save)
    else:
        raise ValueError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
