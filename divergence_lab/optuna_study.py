"""Optuna studies that survive being stopped: hydra-optuna-sweeper with the few things a long study needs.

``hydra_plugins.dlab_optuna_sweeper.ResumableOptunaSweeper`` (selected by ``hparams_search=<preset>``) is the
plugin's ``OptunaSweeper`` plus what this module provides:

* trial folders are numbered after the trials already in the storage, so running the command again
  continues the study (the storage is SQLite in the sweep folder) without reusing a folder; the sampler
  is re-seeded on a continuation, else a seeded sampler would propose the first invocation's trials again;
* a trial whose objective is NaN is recorded as failed (the plugin would stop the study on it), like a
  trial that raised; with ``max_failure_rate: 1.0`` no failure ends the study;
* at the end it writes ``best.yaml``: the best trial's parameters and value, the trial counts, and the
  ``dlab`` command that reruns the best parameters over 5 seeds.
"""

from __future__ import annotations

import logging
import math
import shlex
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

RERUN_SEEDS = "0,1,2,3,4"


class NaNObjectiveError(ValueError):
    pass


class NaNAsFailure(Launcher):
    """Wrap a launcher so that a job returning NaN comes back as a failed job."""

    def __init__(self, launcher: Launcher) -> None:
        self.launcher = launcher

    def setup(self, **kwargs: Any) -> None:
        self.launcher.setup(**kwargs)

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        returns = list(self.launcher.launch(job_overrides, initial_job_idx))
        for ret in returns:
            value = ret._return_value
            if ret.status == JobStatus.COMPLETED and isinstance(value, float) and math.isnan(value):
                ret.status = JobStatus.FAILED
                overrides = " ".join(ret.overrides or [])
                ret.return_value = NaNObjectiveError(f"the objective is NaN for {overrides}")
        return returns


def _stored_trials(storage: str | None, study_name: str | None) -> list[Any]:
    if not storage or not study_name:
        return []
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage).trials
    except KeyError:  # no study of that name yet
        return []


def existing_trial_count(storage: str | None, study_name: str | None) -> int:
    """Trials the study already holds in ``storage`` (0 for a new study or an in-memory one)."""
    return len(_stored_trials(storage, study_name))


def completed_trial_count(storage: str | None, study_name: str | None) -> int:
    import optuna

    complete = optuna.trial.TrialState.COMPLETE
    return sum(trial.state == complete for trial in _stored_trials(storage, study_name))


def rerun_command(config: DictConfig, best_params: dict[str, Any]) -> str:
    """``dlab -m`` with the study's own overrides, the best parameters and 5 seeds, without the search."""
    hydra = config.hydra
    args = ["dlab", "-m"]
    if hydra.job.config_name != "train":
        sources = [s.path for s in hydra.runtime.config_sources if s.provider == "command-line"]
        if sources:
            args += ["-cd", sources[0].removeprefix("file://")]
        args += ["-cn", hydra.job.config_name]
    tuned = set(best_params) | {"seed"}
    for override in hydra.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in tuned and not key.startswith("hparams_search") and not key.startswith("hydra."):
            args.append(override)
    args += [f"{key}={value}" for key, value in best_params.items()]
    args += [f"study={config.study}_best", f"seed={RERUN_SEEDS}"]
    return shlex.join(args)


def write_best(config: DictConfig, storage: str, study_name: str) -> Path:
    """Write ``<sweep folder>/best.yaml`` for the study and log the rerun command; return its path."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    states = [trial.state for trial in study.trials]
    best = study.best_trial
    result = {
        "study": study_name,
        "storage": storage,
        "best_value": best.value,
        "best_trial": best.number,
        "best_params": dict(best.params),
        "trials": {
            "complete": states.count(optuna.trial.TrialState.COMPLETE),
            "failed": states.count(optuna.trial.TrialState.FAIL),
            "total": len(states),
        },
        "rerun": rerun_command(config, dict(best.params)),
    }
    path = Path(config.hydra.sweep.dir) / "best.yaml"
    OmegaConf.save(OmegaConf.create(result), path)
    log.info("Best %s = %.4f with %s", config.optimized_metric, best.value, best.params)
    log.info("Rerun it over 5 seeds: %s", result["rerun"])
    return path
