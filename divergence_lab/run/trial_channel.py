"""How a trial of an Optuna study reaches its jobs, and where those jobs run.

A trial runs ``seeds_per_trial`` = k jobs: seed index ``j`` (0 <= j < k) of trial ``n`` is job number
``n * k + j`` and runs in ``<sweep folder>/<n * k + j>`` (:func:`trial_job_numbers`; k = 1: trial ``n`` is
job ``n``, the layout of a study of one seed per trial).

Each job learns which trial it belongs to through environment variables that the sweeper sets per job
with ``++hydra.job.env_set.<VAR>=...`` overrides (:meth:`TrialChannel.env_overrides`): Hydra sets them
around the job and restores the environment after it, in the job's process whichever the launcher (the
local and joblib launchers, submitit), and ``hydra.*`` overrides are neither part of the run config (so
not of its fingerprint) nor of the study's fixed settings. Outside a trial none is set
(:meth:`TrialChannel.from_env` is None). Imports nothing heavy: every job reads it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# the trial's system attributes the jobs write (run/trial_reports.py): "dlab:seed <j>:epoch <e>", ...
ATTR_PREFIX = "dlab:seed "
STOPPED = ":stopped at epoch"
STORAGE_VAR = "DLAB_OPTUNA_STORAGE"  # the study's storage URL
STUDY_VAR = "DLAB_OPTUNA_STUDY"  # the study's name
TRIAL_VAR = "DLAB_OPTUNA_TRIAL"  # the trial's number
SEED_INDEX_VAR = "DLAB_OPTUNA_SEED_INDEX"  # j: which of the trial's seeds this job runs, from 0
SEEDS_VAR = "DLAB_OPTUNA_SEEDS"  # k: the trial's seeds (jobs)
ENV_SET_PREFIX = "++hydra.job.env_set."  # ++: added, or replacing a value the config sets


def trial_job_numbers(trial_number: int, seeds_per_trial: int) -> range:
    """The job numbers (and folder names) of trial ``trial_number``: ``n * k ... n * k + k - 1``."""
    first = trial_number * seeds_per_trial
    return range(first, first + seeds_per_trial)


def _quoted(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar."""
    return "'" + value.replace("'", "\\'") + "'"


@dataclass(frozen=True)
class TrialChannel:
    """What a trial's job needs to report to its trial: the study (``storage``, ``study_name``), the trial's
    ``number``, the job's ``seed_index`` j and the trial's ``seeds`` k."""

    storage: str
    study_name: str
    number: int
    seed_index: int = 0
    seeds: int = 1

    def env_overrides(self) -> list[str]:
        """The ``++hydra.job.env_set.<VAR>=<value>`` overrides that hand this channel to the job."""
        values = {
            STORAGE_VAR: _quoted(self.storage),
            STUDY_VAR: _quoted(self.study_name),
            TRIAL_VAR: str(self.number),
            SEED_INDEX_VAR: str(self.seed_index),
            SEEDS_VAR: str(self.seeds),
        }
        return [f"{ENV_SET_PREFIX}{name}={value}" for name, value in values.items()]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TrialChannel | None:
        """The channel of the job running in this process, or None outside a trial."""
        if TRIAL_VAR not in environ:
            return None
        return cls(
            storage=environ[STORAGE_VAR],
            study_name=environ[STUDY_VAR],
            number=int(environ[TRIAL_VAR]),
            seed_index=int(environ.get(SEED_INDEX_VAR, "0")),
            seeds=int(environ.get(SEEDS_VAR, "1")),
        )


def epoch_attr(seed_index: int, epoch: int) -> str:
    """The trial's system attribute holding seed ``seed_index``'s value after epoch ``epoch``."""
    return f"{ATTR_PREFIX}{seed_index}:epoch {epoch}"


def stop_attr(seed_index: int) -> str:
    """The trial's system attribute holding the epoch at which seed ``seed_index``'s job stopped."""
    return f"{ATTR_PREFIX}{seed_index}{STOPPED}"


def stopped_by_pruning(system_attrs: Mapping[str, Any]) -> bool:
    """Whether a job of the trial with these system attributes recorded that pruning stopped it."""
    return any(key.startswith(ATTR_PREFIX) and key.endswith(STOPPED) for key in system_attrs)
