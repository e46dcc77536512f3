"""Run the trials of an Optuna study through a Hydra launcher, in batches, with Optuna's ask/tell interface.

Each batch asks the study for ``n_jobs`` trials, hands their jobs' overrides to the launcher in one call (so
a joblib, submitit or SLURM launcher runs them side by side), and tells the study each trial's outcome
(:mod:`divergence_lab.sweep.trial_results`): failed when a job raised, returned NaN or returned something
that is not a number (None); pruned when its pruner stopped it; else the mean of its jobs' values.

A trial runs ``seeds_per_trial`` = k jobs (:class:`TrialJobs`): seed index ``j`` runs with
``seed=<base seed> + j`` as job number ``n * k + j`` (:func:`~divergence_lab.run.trial_channel.
trial_job_numbers`), in ``<sweep folder>/<n * k + j>``; the base seed is the study's fixed ``seed`` (the
config's, 0 by default), and with k = 1 the job gets the trial's overrides unchanged (trial ``n`` is job
``n``). With a persistent storage each job also gets its trial's channel (``hydra.job.env_set``), through
which it reports its epochs (:mod:`divergence_lab.run.trial_reports`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from divergence_lab.run.trial_channel import TrialChannel, trial_job_numbers
from divergence_lab.sweep.optuna_space import SearchSpace
from divergence_lab.sweep.optuna_study import StudyError
from divergence_lab.sweep.trial_results import JobResult, read_job_result, tell_trial

log = logging.getLogger(__name__)

# launch(overrides of each job, number of the first job) -> the jobs' returns, in order
Launch = Callable[[Sequence[Sequence[str]], int], Sequence[JobReturn]]


class TrialFailedError(Exception):
    """A trial's job raised, or returned no usable objective value."""


SEED_KEY = "seed"


@dataclass
class TrialCounts:
    """Trials one invocation launched, and how many of them failed or were pruned."""

    launched: int = 0
    failed: int = 0
    pruned: int = 0


@dataclass(frozen=True)
class TrialJobs:
    """How a trial becomes jobs: ``seeds_per_trial`` seeds from ``base_seed``, each job told its trial
    when the study has a persistent ``storage``; their folders are in ``sweep_dir`` (None: none read)."""

    sweep_dir: Path | None = None
    seeds_per_trial: int = 1
    base_seed: int = 0
    storage: str | None = None

    def overrides(self, study_name: str, number: int, trial_overrides: Sequence[str]) -> list[list[str]]:
        """The overrides of trial ``number``'s jobs, in seed order."""
        jobs = []
        for seed_index in range(self.seeds_per_trial):
            job = list(trial_overrides)
            if self.seeds_per_trial > 1:
                job = [o for o in job if o.split("=", 1)[0].lstrip("+~") != SEED_KEY]
                job.append(f"{SEED_KEY}={self.base_seed + seed_index}")
            if self.storage:
                channel = TrialChannel(self.storage, study_name, number, seed_index, self.seeds_per_trial)
                job += channel.env_overrides()
            jobs.append(job)
        return jobs

    def results(self, number: int) -> list[JobResult]:
        """What trial ``number``'s jobs left in their folders (nothing read without a sweep folder)."""
        folders = trial_job_numbers(number, self.seeds_per_trial)
        if self.sweep_dir is None:
            return []
        return [read_job_result(self.sweep_dir / str(job)) for job in folders]


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
    jobs: TrialJobs | None = None,
) -> TrialCounts:
    """Run ``n_trials`` trials of ``study`` over ``space``, ``n_jobs`` trials (of ``jobs.seeds_per_trial``
    jobs each) at a time; return the counts.

    After each batch, more than ``max_failure_rate`` failed trials among those this invocation launched
    stops the study with a :class:`StudyError`.
    """
    jobs = jobs or TrialJobs()
    k = jobs.seeds_per_trial
    counts = TrialCounts()
    while counts.launched < n_trials:
        trials = [study.ask(space.distributions) for _ in range(min(n_jobs, n_trials - counts.launched))]
        first = trials[0].number
        if [trial.number for trial in trials] != list(range(first, first + len(trials))):
            raise StudyError(
                f"another process is adding trials to study {study.study_name!r}: run one invocation of a "
                f"study at a time"
            )
        batch = [
            job
            for trial in trials
            for job in jobs.overrides(study.study_name, trial.number, space.trial_overrides(trial.params))
        ]
        returns = launch(batch, first * k)
        for index, trial in enumerate(trials):
            try:
                values = [objective_value(job) for job in returns[index * k : (index + 1) * k]]
            except TrialFailedError as error:
                log.warning("Trial %d failed: %s", trial.number, error)
                values = None
            state = tell_trial(study, trial, values, jobs.results(trial.number))
            counts.failed += state == TrialState.FAIL
            counts.pruned += state == TrialState.PRUNED
        counts.launched += len(trials)
        if counts.failed > max_failure_rate * counts.launched:
            raise StudyError(
                f"{counts.failed} of the {counts.launched} trials launched failed, more than "
                f"hydra.sweeper.max_failure_rate={max_failure_rate}; the errors are in the trials' logs"
            )
    return counts
