"""What a trial's jobs left in their folders, told to the study: the trial's state, value and attributes.

A trial of ``k`` seeds (:mod:`divergence_lab.run.trial_channel`) is

* failed when one of its jobs failed or gave no number (the caller decides: ``values`` None);
* pruned when one of its jobs' ``metrics.json`` says so (``"pruned": {"at_epoch": e}``): Optuna records
  the trial's last intermediate value as its value;
* complete otherwise, with the mean of its jobs' objective values.

Before it is told, the trial gets user attributes read from its job folders (:func:`trial_attributes`),
which optuna-dashboard shows: ``run_dirs``, ``seeds`` and ``fingerprints`` (the first
:data:`FINGERPRINT_CHARS` hex digits of each run's ``fingerprint.json`` SHA-256), every ``val/*`` and
``test/*`` metric (the mean over the seeds that recorded it), and with several seeds ``<metric> per seed``
(by seed index) and ``<metric> std`` (the sample standard deviation over seeds, n - 1 in the denominator),
and ``pruned at epoch`` (by seed index, null for a seed that was not stopped).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from divergence_lab.ground.record_format import PRUNED_KEY, fingerprint_digest, finished_record
from divergence_lab.run.trial_channel import stopped_by_pruning

FINGERPRINT_CHARS = 12
REPORTED_SPLITS = ("val/", "test/")
PER_SEED, SPREAD, PRUNED_AT = " per seed", " std", "pruned at epoch"


@dataclass(frozen=True)
class JobResult:
    """One job of a trial: its folder, its ``metrics.json`` (None before it finished) and its short
    fingerprint (None without ``fingerprint.json``)."""

    folder: Path
    record: dict[str, Any] | None
    fingerprint: str | None

    @property
    def pruned_at(self) -> int | None:
        """The epoch at which the trial's pruning stopped this job, or None."""
        entry = (self.record or {}).get(PRUNED_KEY)
        return int(entry["at_epoch"]) if isinstance(entry, dict) and "at_epoch" in entry else None

    def metric(self, name: str) -> float | None:
        value = ((self.record or {}).get("metrics") or {}).get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_job_result(folder: Path) -> JobResult:
    """What the job of ``folder`` left: ``metrics.json`` and the short hash of ``fingerprint.json``."""
    digest = fingerprint_digest(folder)
    return JobResult(folder, finished_record(folder), digest[:FINGERPRINT_CHARS] if digest else None)


def trial_attributes(jobs: Sequence[JobResult]) -> dict[str, Any]:
    """The user attributes of a trial whose jobs are ``jobs`` (in seed order); see the module docstring."""
    attributes: dict[str, Any] = {
        "run_dirs": [str(job.folder) for job in jobs],
        "seeds": [(job.record or {}).get("seed") for job in jobs],
        "fingerprints": [job.fingerprint for job in jobs],
    }
    names = sorted(
        {
            name
            for job in jobs
            for name in (job.record or {}).get("metrics", {})
            if name.startswith(REPORTED_SPLITS)
        }
    )
    for name in names:
        per_seed = [job.metric(name) for job in jobs]
        recorded = [value for value in per_seed if value is not None]
        attributes[name] = statistics.fmean(recorded)
        if len(jobs) > 1:
            attributes[name + PER_SEED] = per_seed
            attributes[name + SPREAD] = statistics.stdev(recorded) if len(recorded) > 1 else None
    if any(job.pruned_at is not None for job in jobs):
        attributes[PRUNED_AT] = [job.pruned_at for job in jobs]
    return attributes


def tell_trial(
    study: optuna.Study, trial: optuna.Trial, values: Sequence[float] | None, jobs: Sequence[JobResult]
) -> TrialState:
    """Set ``trial``'s attributes from ``jobs`` and tell the study its outcome: failed when ``values`` (the
    jobs' objective values) is None, pruned when a job was stopped by pruning (its ``metrics.json`` says so,
    or it recorded the stop on the trial), else complete with the mean of ``values``. Returns the state
    told."""
    for key, value in trial_attributes(jobs).items():
        trial.set_user_attr(key, value)
    if values is None:
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    recorded = study._storage.get_trial(trial._trial_id).system_attrs  # the jobs' own records of stopping
    if any(job.pruned_at is not None for job in jobs) or stopped_by_pruning(recorded):
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED
    study.tell(trial, statistics.fmean(values))
    return TrialState.COMPLETE
