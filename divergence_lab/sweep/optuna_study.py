"""Optuna studies that survive being stopped: hydra-optuna-sweeper with the few things a long study needs.

The sweeper that ``hparams_search=<preset>`` selects
(``hydra_plugins.divergence_lab_plugins.optuna_sweeper.ResumableOptunaSweeper``) is the plugin's
``OptunaSweeper`` plus what this module provides:

* ``n_trials`` is the size of the study, not of one invocation: running the command again continues the
  stored study (SQLite in the sweep folder) up to ``n_trials`` finished trials (complete or failed), so an
  interrupted study is completed by rerunning it, and a larger ``n_trials`` extends it. Trial folders are
  numbered by trial number, never reused; the sampler is re-seeded on a continuation (a seeded sampler
  would otherwise propose the first invocation's trials again);
* trials left running by an invocation that stopped are settled first: completed from their run's
  ``metrics.json`` when the job finished after all, failed otherwise;
* a trial whose objective is NaN is recorded as failed (the plugin would stop the study on it), like a
  trial that raised; with ``max_failure_rate: 1.0`` no failure ends the study;
* at the end it writes ``best.yaml``: the best trial's parameters and value, the trial counts, and the
  ``dlab`` command that reruns the best parameters over 5 seeds.
"""

from __future__ import annotations

import json
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
    """A trial's objective came back NaN (e.g. a diverged run): the trial is recorded as failed."""


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


def load_study(storage: str | None, study_name: str | None) -> Any | None:
    """The stored study, or None when there is none yet (or no persistent storage)."""
    if not storage or not study_name:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no study of that name yet
        return None


def settle_stale_trials(study: Any, sweep_dir: Path, metric: str) -> int:
    """Tell the trials an earlier invocation left RUNNING: their job's result if it finished, else failure.

    Trial ``n`` ran in ``<sweep_dir>/<n>`` (trial folders are numbered by trial number). Returns how many
    trials were settled.
    """
    from optuna.trial import TrialState

    stale = [trial for trial in study.trials if trial.state == TrialState.RUNNING]
    for trial in stale:
        value = None
        record = sweep_dir / str(trial.number) / "metrics.json"
        if record.is_file():
            value = json.loads(record.read_text())["metrics"].get(metric)
        if value is None or math.isnan(value):
            study.tell(trial.number, state=TrialState.FAIL)
        else:
            study.tell(trial.number, [value])
    return len(stale)


def finished_trial_count(study: Any | None) -> int:
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
    return 0 if study is None else sum(trial.state in done for trial in study.trials)


def completed_trial_count(study: Any | None) -> int:
    from optuna.trial import TrialState

    return 0 if study is None else sum(trial.state == TrialState.COMPLETE for trial in study.trials)


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
    args += [f"study_name={config.study_name}_best", f"seed={RERUN_SEEDS}"]
    return shlex.join(args)


def write_best(config: DictConfig, storage: str, study_name: str) -> Path:
    """Write ``<sweep folder>/best.yaml`` for the study and log the rerun command; return its path."""
    import optuna

    study = load_study(storage, study_name)
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
