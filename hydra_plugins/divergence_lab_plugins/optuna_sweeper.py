"""hydra-optuna-sweeper's sweeper, made to continue its study and survive failed trials.

The logic lives in :mod:`divergence_lab.sweep.optuna_study`; this module only plugs it into Hydra.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

from divergence_lab.sweep.optuna_study import (
    NaNAsFailure,
    completed_trial_count,
    finished_trial_count,
    load_study,
    settle_stale_trials,
    write_best,
)

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    """Continues a stored study up to ``n_trials`` finished trials (settling stale ones, trial folders
    numbered by trial, sampler re-seeded), records NaN trials as failed, writes ``best.yaml`` at the end."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.config = config
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # the SQLite storage lives there
        impl = self.sweeper
        impl.launcher = NaNAsFailure(impl.launcher)
        study = load_study(impl.storage, impl.study_name)
        if study is None:
            return
        settled = settle_stale_trials(study, sweep_dir, config.optimized_metric)
        if settled:
            log.info("Settled %d trial(s) left running by an earlier invocation", settled)
        finished = finished_trial_count(study)
        impl.job_idx = len(study.trials)  # trial n runs in <sweep dir>/<n>
        requested, impl.n_trials = impl.n_trials, max(impl.n_trials - finished, 0)
        # a seeded sampler would otherwise propose the first invocation's trials again
        if hasattr(impl.sampler, "reseed_rng"):
            impl.sampler.reseed_rng()
        log.info(
            "Continuing study %r: %d of n_trials=%d trials finished, %d to run",
            impl.study_name,
            finished,
            requested,
            impl.n_trials,
        )

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        try:
            impl.sweep(arguments)
        except ValueError as error:  # the plugin asks for the best trial even when none completed
            if completed_trial_count(load_study(impl.storage, impl.study_name)) == 0:
                raise RuntimeError(
                    f"no trial of study {impl.study_name!r} completed: every trial failed "
                    f"(each trial's error is in its train.log under {self.config.hydra.sweep.dir})"
                ) from error
            raise
        write_best(self.config, impl.storage, impl.study_name)
