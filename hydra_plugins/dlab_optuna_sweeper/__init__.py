"""divergence_lab's Optuna sweeper: hydra-optuna-sweeper that continues its study and survives failed trials.

Hydra loads sweepers only from the ``hydra_plugins`` namespace, hence this package; the logic lives in
:mod:`divergence_lab.optuna_study`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

from divergence_lab.optuna_study import NaNAsFailure, completed_trial_count, existing_trial_count, write_best

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    """Continues a stored study (trial folders numbered after its trials, sampler re-seeded), records NaN
    trials as failed, and writes ``best.yaml`` at the end."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.config = config
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)  # the SQLite storage lives there
        impl = self.sweeper
        impl.launcher = NaNAsFailure(impl.launcher)
        impl.job_idx = existing_trial_count(impl.storage, impl.study_name)
        if impl.job_idx:
            # a seeded sampler would otherwise propose the same startup trials as the first invocation
            if hasattr(impl.sampler, "reseed_rng"):
                impl.sampler.reseed_rng()
            log.info("Continuing study %r: %d trial(s) in %s", impl.study_name, impl.job_idx, impl.storage)

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        try:
            impl.sweep(arguments)
        except ValueError as error:  # the plugin asks for the best trial even when none completed
            if completed_trial_count(impl.storage, impl.study_name) == 0:
                raise RuntimeError(
                    f"no trial of study {impl.study_name!r} completed: every trial failed "
                    f"(each trial's error is in its train.log under {self.config.hydra.sweep.dir})"
                ) from error
            raise
        write_best(self.config, impl.storage, impl.study_name)
