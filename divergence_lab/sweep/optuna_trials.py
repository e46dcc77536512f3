"""Run the trials of an Optuna study through a Hydra launcher, in batches, with Optuna's ask/tell interface.

Each batch asks the study for ``n_jobs`` trials, hands their overrides to the launcher in one call (so a
joblib, submitit or SLURM launcher runs them side by side), and tells the study each trial's outcome: the
value the job returned, or a failure when the job raised, returned NaN or returned something that is not a
number (None). Trial ``n`` is job number ``n``: it runs in ``<sweep folder>/<n>``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from divergence_lab.sweep.optuna_space import SearchSpace
from divergence_lab.sweep.optuna_study import StudyError

log = logging.getLogger(__name__)

# launch(overrides of each job, number of the first job) -> the jobs' returns, in order
Launch = Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]]


class TrialFailedError(Exception):
    """A trial's job raised, or returned no usable objective value."""


@dataclass
class TrialCounts:
    """Trials one invocation launched, and how many of them failed."""

    launched: int = 0
    failed: int = 0


def objective_value(job: JobReturn) -> float:
    """The objective a job returned; :class:`TrialFailedError` when it raised or returned NaN or no number."""
    if job.status == JobStatus.FAILED:
        error = job._return_value  # the public return_value would print and raise it
        raise TrialFailedError(f"{type(error).__name__}: {error}")
    value = job.return_value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TrialFailedError(f"the job returned {value!r}, not a number") from None
    if math.isnan(number):
        raise TrialFailedError("the objective is NaN")
    return number


def run_trials(
    study: optuna.Study,
    space: SearchSpace,
    launch: Launch,
    n_trials: int,
    n_jobs: int,
    max_failure_rate: float,
) -> TrialCounts:
    """Run ``n_trials`` trials of ``study`` over ``space``, ``n_jobs`` at a time; return the counts.

    After each batch, more than ``max_failure_rate`` failed trials among those this invocation launched
    stops the study with a :class:`StudyError`.
    """
    counts = TrialCounts()
    while counts.launched < n_trials:
        trials = [study.ask(space.distributions) for _ in range(min(n_jobs, n_trials - counts.launched))]
        first = trials[0].number
        if [trial.number for trial in trials] != list(range(first, first + len(trials))):
            raise StudyError(
                f"another process is adding trials to study {study.study_name!r}: run one invocation of a "
                f"study at a time"
            )
        returns = launch([space.trial_overrides(trial.params) for trial in trials], first)
        for trial, job in zip(trials, returns, strict=True):
            try:
                study.tell(trial, objective_value(job))
            except TrialFailedError as error:
                study.tell(trial, state=TrialState.FAIL)
                log.warning("Trial %d failed: %s", trial.number, error)
                counts.failed += 1
        counts.launched += len(trials)
        if counts.failed > max_failure_rate * counts.launched:
            raise StudyError(
                f"{counts.failed} of the {counts.launched} trials launched failed, more than "
                f"hydra.sweeper.max_failure_rate={max_failure_rate}; the errors are in the trials' logs"
            )
    return counts
