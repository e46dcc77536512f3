"""One invocation of a stored Optuna study: open or continue it, run the trials it still needs, sum it up.

This is what ``hydra/sweeper=optuna`` does on ``sweep()``; the Hydra plugin
(``hydra_plugins.divergence_lab_plugins.optuna_sweeper``) only hands over its settings, the command line's
overrides and a way to launch jobs, and imports this module (and Optuna) only when a sweep starts.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from divergence_lab.config.trial_settings import check_trial_settings
from divergence_lab.ground.errors import ConfigError
from divergence_lab.run.optuna_pruners import NO_PRUNER, build_pruner
from divergence_lab.sweep.optuna_space import SearchSpace, parse_search_space
from divergence_lab.sweep.optuna_study import (
    StudyError,
    completed_trial_count,
    finished_trial_count,
    fixed_settings,
    key_by_fixed_settings,
    key_by_seeds_per_trial,
    load_study,
    open_study,
    settle_stale_trials,
    write_best,
)
from divergence_lab.sweep.optuna_trials import SEED_KEY, Launch, TrialJobs, run_trials

log = logging.getLogger(__name__)


@dataclass
class StudySettings:
    """``hydra.sweeper``'s settings: the sampler's config, the study's direction, storage and name, its size
    over all invocations (``n_trials``), trials per launch (``n_jobs``), ``max_failure_rate``, ``params``,
    the ``pruner`` and its settings (``pruners``, :mod:`divergence_lab.run.optuna_pruners`), the jobs
    of each trial (``seeds_per_trial``) and the ``tie_tolerance`` of the best trials."""

    sampler: DictConfig
    direction: str
    storage: str | None
    study_name: str | None
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    params: Mapping[str, Any]
    pruner: str = NO_PRUNER
    pruners: Mapping[str, Any] = field(default_factory=dict)
    seeds_per_trial: int = 1
    tie_tolerance: float = 0.0


def seeded_sampler(sampler: DictConfig, earlier_trials: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; a seeded one continuing a study is seeded with ``seed + earlier_trials``
    (with the seed alone it would propose the first invocation's trials again)."""
    seed = sampler.get("seed")
    if seed is None or earlier_trials == 0:
        return instantiate(sampler)
    log.info("Sampler seed %d + %d trials already in the study", seed, earlier_trials)
    return instantiate(sampler, seed=seed + earlier_trials)


def base_seed(space: SearchSpace, config: DictConfig, seeds_per_trial: int) -> int:
    """The first seed of every trial: the study's fixed ``seed`` (``hydra.sweeper.params`` or the command
    line), else the config's (0 by default). A searched ``seed`` with several seeds per trial is refused."""
    if SEED_KEY in space.distributions and seeds_per_trial > 1:
        raise StudyError(
            f"seed is searched, but hydra.sweeper.seeds_per_trial={seeds_per_trial} runs each trial with "
            f"seeds <seed> ... <seed> + {seeds_per_trial - 1}: fix the first one (seed=3) or set "
            f"hydra.sweeper.seeds_per_trial=1"
        )
    if SEED_KEY not in space.fixed:
        return int(config.get(SEED_KEY) or 0)
    value = OverridesParser.create().parse_override(space.fixed[SEED_KEY]).value()
    if not isinstance(value, int) or isinstance(value, bool):
        raise StudyError(f"{space.fixed[SEED_KEY]}: the first seed of each trial must be an integer")
    return value


def check_settings(settings: StudySettings) -> None:
    """The pre-flight checks of the pruner, ``seeds_per_trial`` and ``tie_tolerance``, for apps that
    reach the sweeper without ``dlab``'s pre-flight: :class:`StudyError` (one line) on a bad value."""
    try:
        check_trial_settings(asdict(settings))
    except ConfigError as error:
        raise StudyError(str(error)) from None


def run_study(settings: StudySettings, config: DictConfig, arguments: Sequence[str], launch: Launch) -> Path:
    """Run the study of ``settings`` up to ``n_trials`` finished trials over the search space of ``params``
    and the command line's ``arguments``; write ``multirun.yaml`` and ``best.yaml`` in the sweep folder and
    return the path of ``best.yaml``. :class:`StudyError` (one line) when the study cannot go on."""
    check_settings(settings)
    sweep_dir = Path(config.hydra.sweep.dir)
    space = parse_search_space(settings.params, arguments)
    first_seed = base_seed(space, config, settings.seeds_per_trial)
    sweep_dir.mkdir(parents=True, exist_ok=True)  # the SQLite storage lives there
    stored = load_study(settings.storage, settings.study_name)
    sampler = seeded_sampler(settings.sampler, 0 if stored is None else len(stored.trials))
    study = open_study(
        settings.storage, settings.study_name, settings.direction, sampler, build_pruner(asdict(settings))
    )
    key_by_fixed_settings(study, fixed_settings(space.fixed), settings.storage)
    key_by_seeds_per_trial(study, settings.seeds_per_trial, settings.storage)
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and what optuna-dashboard reads
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([config.optimized_metric])
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    if stored is not None:
        settled = settle_stale_trials(study, sweep_dir, config.optimized_metric, settings.seeds_per_trial)
        if settled:
            log.info("Settled %d trial(s) left running by an earlier invocation", settled)
    finished = finished_trial_count(study)
    to_run = max(settings.n_trials - finished, 0)
    if stored is not None:
        log.info(
            "Continuing study %r: %d of n_trials=%d trials finished, %d to run",
            study.study_name,
            finished,
            settings.n_trials,
            to_run,
        )
    jobs = TrialJobs(sweep_dir, settings.seeds_per_trial, first_seed, settings.storage)
    run_trials(study, space, launch, to_run, settings.n_jobs, settings.max_failure_rate, jobs)
    if completed_trial_count(study) == 0:
        raise StudyError(
            f"no trial of study {study.study_name!r} completed: every trial failed or was pruned "
            f"(each trial's log is under {sweep_dir})"
        )
    fixed = parse_search_space(settings.params, []).fixed
    return write_best(config, study, settings.storage, fixed, settings.tie_tolerance)
