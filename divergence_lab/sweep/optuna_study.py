"""The stored Optuna study of a sweep: opened or continued, keyed by its fixed settings, summed up at the end.

The sweeper that ``hparams_search=<preset>`` selects
(``hydra_plugins.divergence_lab_plugins.optuna_sweeper.ResumableOptunaSweeper``) keeps its study in a
persistent storage (SQLite in the sweep folder), so that:

* ``n_trials`` is the size of the study, not of one invocation: running the command again continues the
  stored study up to ``n_trials`` finished trials (complete or failed), and a larger ``n_trials`` extends it.
  A seeded sampler is seeded with ``seed + <trials already in the study>`` on a continuation (with the
  seed alone it would propose the first invocation's trials again);
* trials left running by an invocation that stopped are settled first: completed from their runs'
  ``metrics.json`` when their jobs finished after all (pruned when one was stopped by pruning), failed
  otherwise (seed index ``j`` of trial ``n`` runs in ``<sweep folder>/<n * k + j>``, k =
  ``seeds_per_trial``, :mod:`divergence_lab.run.trial_channel`);
* the study is keyed by its fixed settings: the overrides every trial gets (not searched, not ``hydra.*``)
  are recorded when the study is created, and a continuation under other fixed settings is refused, so
  that trials run under different settings never mix in one study; so is its ``seeds_per_trial``, which
  numbers its job folders (:func:`key_by_seeds_per_trial`);
* the study's objective is named after ``optimized_metric`` (``study.set_metric_names``), which
  optuna-dashboard shows instead of "Objective 0";
* at the end :func:`write_best` writes ``best.yaml``: the best trial's parameters and value, every trial
  tied with it (``best_trials``: within ``hydra.sweeper.tie_tolerance``, :mod:`divergence_lab.ground.ties`),
  the trial counts (complete, pruned, failed), and the ``dlab`` command that reruns the best parameters
  over 5 seeds (those of the trial at the best value, the lowest-numbered among equal values).
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from divergence_lab.ground.ties import tied_best
from divergence_lab.run.trial_channel import trial_job_numbers
from divergence_lab.sweep.trial_results import read_job_result, tell_trial

log = logging.getLogger(__name__)

RERUN_SEEDS = "0,1,2,3,4"
FIXED_SETTINGS_ATTR = "fixed_overrides"  # the study's user attribute holding {key: override as written}
SEEDS_ATTR = "seeds_per_trial"  # the study's user attribute holding its seeds per trial (absent: 1)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
NOT_SET = "(not set)"
SETTINGS_OUTSIDE_THE_TASK = ("hydra.", "hydra/")


class StudyError(CompactHydraException):
    """A study that cannot go on (other fixed settings, every trial failed): Hydra prints the one line."""


def load_study(storage: str | None, study_name: str | None) -> optuna.Study | None:
    """The stored study, or None when there is none yet (or no persistent storage)."""
    if not storage or not study_name:
        return None
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no study of that name yet
        return None


def open_study(
    storage: str | None,
    study_name: str | None,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """The study ``study_name`` of ``storage`` with ``sampler`` and ``pruner``, created when there is none;
    refused in one line when the stored study optimises in the other direction."""
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    stored = study.direction.name.lower()
    if stored != direction:
        raise StudyError(
            f"study {study.study_name!r} in {storage} was created to {stored}, not to {direction}; keep "
            f"hydra.sweeper.direction={stored}, or start a separate study (another hydra.sweep.dir or "
            f"hydra.sweeper.study_name)"
        )
    return study


def fixed_settings(fixed_overrides: Mapping[str, str]) -> dict[str, str]:
    """The overrides that key a study: every trial's fixed overrides, less Hydra's own settings."""
    return {
        key: text
        for key, text in fixed_overrides.items()
        if not key.lstrip("+~").startswith(SETTINGS_OUTSIDE_THE_TASK)
    }


def key_by_fixed_settings(study: optuna.Study, settings: Mapping[str, str], storage: str | None) -> None:
    """Record ``settings`` ({key: override as written}) on a study that has none recorded; refuse in one
    line a study recorded with other settings, naming the keys that differ."""
    recorded = study.user_attrs.get(FIXED_SETTINGS_ATTR)
    if recorded is None:
        study.set_user_attr(FIXED_SETTINGS_ATTR, dict(settings))
        return
    differing = sorted(key for key in {*recorded, *settings} if recorded.get(key) != settings.get(key))
    if differing:
        changes = ", ".join(
            f"{key}: {_value_as_written(recorded.get(key))} -> {_value_as_written(settings.get(key))}"
            for key in differing
        )
        raise StudyError(
            f"study {study.study_name!r} in {storage} was run with other fixed settings ({changes}); its "
            f"trials would mix with these: rerun it with its own settings, or start a separate study "
            f"(another hydra.sweep.dir or hydra.sweeper.study_name)"
        )


def key_by_seeds_per_trial(study: optuna.Study, seeds_per_trial: int, storage: str | None) -> None:
    """Record ``seeds_per_trial`` on a study that has none recorded (a study whose trials ran without one
    ran 1); refuse in one line a study recorded with another number: its job folders are numbered by it."""
    recorded = study.user_attrs.get(SEEDS_ATTR)
    if recorded is None and any(trial.state != TrialState.WAITING for trial in study.trials):
        recorded = 1
    if recorded is not None and recorded != seeds_per_trial:
        raise StudyError(
            f"study {study.study_name!r} in {storage} runs {recorded} seed(s) per trial, not "
            f"{seeds_per_trial} (its job folders are numbered by it): keep hydra.sweeper.seeds_per_trial="
            f"{recorded}, or start a separate study (another hydra.sweep.dir or hydra.sweeper.study_name)"
        )
    if SEEDS_ATTR not in study.user_attrs:
        study.set_user_attr(SEEDS_ATTR, seeds_per_trial)


def _value_as_written(override: str | None) -> str:
    return NOT_SET if override is None else override.partition("=")[2] or override


def settle_stale_trials(study: optuna.Study, sweep_dir: Path, metric: str, seeds_per_trial: int = 1) -> int:
    """Tell the trials an earlier invocation left RUNNING: the mean of their jobs' ``metric`` when every job
    finished (pruned when one was stopped by pruning), else failure; their attributes are read from the job
    folders as for any trial (:func:`~divergence_lab.sweep.trial_results.tell_trial`).

    Seed index ``j`` of trial ``n`` ran in ``<sweep_dir>/<n * seeds_per_trial + j>``. Returns how many
    trials were settled.
    """
    stale = [trial for trial in study.trials if trial.state == TrialState.RUNNING]
    for trial in stale:
        jobs = [read_job_result(sweep_dir / str(n)) for n in trial_job_numbers(trial.number, seeds_per_trial)]
        values = [job.metric(metric) for job in jobs]
        usable = all(value is not None and not math.isnan(value) for value in values)
        tell_trial(study, optuna.Trial(study, trial._trial_id), values if usable else None, jobs)
    return len(stale)


def finished_trial_count(study: optuna.Study | None) -> int:
    """Trials of ``study`` that finished: complete, failed or pruned (0 without a study)."""
    return 0 if study is None else sum(trial.state in FINISHED_STATES for trial in study.trials)


def completed_trial_count(study: optuna.Study | None) -> int:
    """Trials of ``study`` that completed with a value (0 without a study)."""
    return 0 if study is None else sum(trial.state == TrialState.COMPLETE for trial in study.trials)


def rerun_command(config: DictConfig, best_params: dict[str, Any], fixed: Mapping[str, str] = ()) -> str:
    """``dlab -m`` with the study's own overrides, its fixed ``hydra.sweeper.params`` (``fixed``: {key:
    override as written}), the best parameters and 5 seeds, without the search."""
    hydra = config.hydra
    args = ["dlab", "-m"]
    if hydra.job.config_name != "train":
        sources = [s.path for s in hydra.runtime.config_sources if s.provider == "command-line"]
        if sources:
            args += ["-cd", sources[0].removeprefix("file://")]
        args += ["-cn", hydra.job.config_name]
    tuned = set(best_params) | {"seed"}
    given: dict[str, str] = {}  # key -> override; the command line's win over hydra.sweeper.params
    for override in [*dict(fixed).values(), *hydra.overrides.task]:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in tuned and not key.startswith("hparams_search") and not key.startswith("hydra."):
            given.pop(key, None)
            given[key] = override
    args += given.values()
    args += [f"{key}={value}" for key, value in best_params.items()]
    args += [f"study_name={config.study_name}_best", f"seed={RERUN_SEEDS}"]
    return shlex.join(args)


def best_trials(study: optuna.Study, tolerance: float = 0.0) -> list[optuna.trial.FrozenTrial]:
    """The completed trials tied for the best value (within ``tolerance``), lowest-numbered first."""
    completed = {trial.number: trial for trial in study.trials if trial.state == TrialState.COMPLETE}
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    tied = tied_best(
        {number: float(trial.value) for number, trial in sorted(completed.items())}, maximize, tolerance
    )
    return [completed[number] for number in tied]


def write_best(
    config: DictConfig,
    study: optuna.Study,
    storage: str | None,
    fixed: Mapping[str, str],
    tie_tolerance: float = 0.0,
) -> Path:
    """Write ``<sweep folder>/best.yaml`` for the study and log the rerun command; return its path.

    ``fixed`` are the fixed overrides of ``hydra.sweeper.params`` ({key: override as written}), which the
    rerun command must repeat. Trials within ``tie_tolerance`` of the best value are tied with it: all are
    listed (``best_trials``) and said tied. ``best_trial`` (whose parameters the rerun command takes) is the
    one with the best value itself, the lowest-numbered among equal values."""
    states = [trial.state for trial in study.trials]
    tied = best_trials(study, tie_tolerance)
    best_value = study.best_value
    best = next(trial for trial in tied if trial.value == best_value)
    result = {
        "study": study.study_name,
        "storage": storage,
        "best_value": best.value,
        "best_trial": best.number,
        "best_trials": [trial.number for trial in tied],
        "tie_tolerance": tie_tolerance,
        "best_params": dict(best.params),
        "seeds_per_trial": study.user_attrs.get(SEEDS_ATTR, 1),
        "trials": {
            "complete": states.count(TrialState.COMPLETE),
            "pruned": states.count(TrialState.PRUNED),
            "failed": states.count(TrialState.FAIL),
            "total": len(states),
        },
        "rerun": rerun_command(config, dict(best.params), fixed),
    }
    path = Path(config.hydra.sweep.dir) / "best.yaml"
    OmegaConf.save(OmegaConf.create(result), path)
    metric = config.optimized_metric
    log.info("Best %s = %.4f with %s", metric, best.value, best.params)
    if len(tied) > 1:
        numbers = ", ".join(str(trial.number) for trial in tied)
        log.info(
            "Trials %s are tied for the best %s (within tie_tolerance=%g); the rerun command uses trial %d, "
            "the lowest-numbered at the best value",
            numbers,
            metric,
            tie_tolerance,
            best.number,
        )
    log.info("Rerun it over 5 seeds: %s", result["rerun"])
    return path
