"""One invocation of a stored Optuna study: open or continue it, run the trials it still needs, sum it up.

This is what ``hydra/sweeper=optuna`` does on ``sweep()``; the Hydra plugin
(``hydra_plugins.divergence_lab_plugins.optuna_sweeper``) only hands over its settings, the command line's
overrides and a way to launch jobs, and imports this module (and Optuna) only when a sweep starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from divergence_lab.sweep.optuna_space import parse_search_space
from divergence_lab.sweep.optuna_study import (
    StudyError,
    completed_trial_count,
    finished_trial_count,
    fixed_settings,
    key_by_fixed_settings,
    load_study,
    open_study,
    settle_stale_trials,
    write_best,
)
from divergence_lab.sweep.optuna_trials import Launch, run_trials

log = logging.getLogger(__name__)


@dataclass
class StudySettings:
    """``hydra.sweeper``'s settings: the sampler's config, the study's direction, storage and name, its size
    over all invocations (``n_trials``), trials per launch (``n_jobs``), ``max_failure_rate``, ``params``."""

    sampler: DictConfig
    direction: str
    storage: str | None
    study_name: str | None
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    params: Mapping[str, Any]


def seeded_sampler(sampler: DictConfig, earlier_trials: int) -> optuna.samplers.BaseSampler:
    """The configured sampler; a seeded one continuing a study is seeded with ``seed + earlier_trials``
    (with the seed alone it would propose the first invocation's trials again)."""
    seed = sampler.get("seed")
    if seed is None or earlier_trials == 0:
        return instantiate(sampler)
    log.info("Sampler seed %d + %d trials already in the study", seed, earlier_trials)
    return instantiate(sampler, seed=seed + earlier_trials)


def run_study(settings: StudySettings, config: DictConfig, arguments: Sequence[str], launch: Launch) -> Path:
    """Run the study of ``settings`` up to ``n_trials`` finished trials over the search space of ``params``
    and the command line's ``arguments``; write ``multirun.yaml`` and ``best.yaml`` in the sweep folder and
    return the path of ``best.yaml``. :class:`StudyError` (one line) when the study cannot go on."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)  # the SQLite storage lives there
    space = parse_search_space(settings.params, arguments)
    stored = load_study(settings.storage, settings.study_name)
    sampler = seeded_sampler(settings.sampler, 0 if stored is None else len(stored.trials))
    study = open_study(settings.storage, settings.study_name, settings.direction, sampler)
    key_by_fixed_settings(study, fixed_settings(space.fixed), settings.storage)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    if stored is not None:
        settled = settle_stale_trials(study, sweep_dir, config.optimized_metric)
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
    run_trials(study, space, launch, to_run, settings.n_jobs, settings.max_failure_rate)
    if completed_trial_count(study) == 0:
        raise StudyError(
            f"no trial of study {study.study_name!r} completed: every trial failed "
            f"(each trial's error is in its log under {sweep_dir})"
        )
    return write_best(config, study, settings.storage, parse_search_space(settings.params, []).fixed)
