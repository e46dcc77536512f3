"""``hydra/sweeper=optuna``: divergence_lab's Optuna sweeper, with its samplers ``hydra/sweeper/sampler=tpe``
(the default) and ``random``.

Settings (``hydra.sweeper.*``): ``params`` (the search space, in Hydra's override grammar: ``choice``,
``range``, ``interval``, ``tag(log, interval(...))``, or a fixed value), ``direction`` (minimize or
maximize), ``storage`` and ``study_name`` (where the study is kept), ``n_trials`` (the size of the study
over all invocations), ``n_jobs`` (trials handed to the launcher at once), ``max_failure_rate``,
``sampler`` (``seed``, ...), ``pruner`` (``none``, ``median`` or ``hyperband``) with its settings under
``pruners.<name>`` (:mod:`divergence_lab.run.optuna_pruners`), ``seeds_per_trial`` (the jobs of a trial,
seeds ``seed`` ... ``seed + k - 1``, whose mean is the trial's value) and ``tie_tolerance`` (trials within
it of the best value are tied in ``best.yaml``). This module only plugs
:mod:`divergence_lab.sweep.optuna_run` into Hydra, and stays cheap to import (Hydra imports it in every
process).

A study that cannot go on (more failed trials than ``max_failure_rate`` allows, every trial failed) still
gets its end-of-sweep report of the trials that finished, then ends with one error line and a non-zero exit
status (:func:`~hydra_plugins.divergence_lab_plugins.grid_sweeper.end_with_failures`).
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering them in
# sys.modules, and dataclasses cannot resolve string annotations then.
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig, OmegaConf

PROVIDER = "divergence_lab"


@dataclass
class TPESamplerConf:
    """Optuna's TPE sampler: random for the first ``n_startup_trials``, then guided by the finished ones."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    """Optuna's random sampler: every trial drawn independently."""

    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


def _pruner_settings() -> dict[str, dict[str, int]]:
    """Each pruner's settings (``hydra.sweeper.pruners.<name>``); steps are epochs counted from 1."""
    return {
        "median": {"n_startup_trials": 5, "n_warmup_steps": 1},
        "hyperband": {"min_resource": 1, "reduction_factor": 3},
    }


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.divergence_lab_plugins.optuna_sweeper.ResumableOptunaSweeper"
    _recursive_: bool = False  # the sweeper instantiates the sampler itself: its seed depends on the study
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: Any = "minimize"  # Any: a wrong value reaches the pre-flight check, which names it
    storage: str | None = None
    study_name: str | None = None
    n_trials: int = 20
    n_jobs: int = 1
    max_failure_rate: float = 0.0
    params: dict[str, str] | None = None
    # Any: a wrong value reaches the pre-flight check, which names it
    pruner: Any = "none"
    pruners: Any = field(default_factory=_pruner_settings)
    seeds_per_trial: Any = 1
    tie_tolerance: Any = 0.0


class ResumableOptunaSweeper(Sweeper):
    """Runs a stored Optuna study up to ``n_trials`` finished trials, ``n_jobs`` at a time through the
    configured launcher: continues it when rerun (settling trials left running), refuses a continuation
    under other fixed settings, records failed and NaN trials as failed, writes ``best.yaml`` at the end."""

    def __init__(
        self,
        sampler: DictConfig,
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        pruner: str = "none",
        pruners: DictConfig | None = None,
        seeds_per_trial: int = 1,
        tie_tolerance: float = 0.0,
    ) -> None:
        self.sampler = sampler
        self.direction = str(direction)
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = OmegaConf.to_container(params) if params is not None else {}
        self.pruner = pruner
        self.pruners = OmegaConf.to_container(pruners) if pruners is not None else {}
        self.seeds_per_trial = seeds_per_trial
        self.tie_tolerance = tie_tolerance
        self.jobs: list[list[str]] = []  # every launched trial's overrides
        self.failed: list[JobReturn] = []  # the failed trials, named when the study cannot go on

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        # imported here: Hydra imports this module in every process, Optuna is needed only by a study
        from divergence_lab.sweep.optuna_run import StudySettings, run_study
        from divergence_lab.sweep.optuna_study import StudyError
        from hydra_plugins.divergence_lab_plugins.grid_sweeper import describe_failures, end_with_failures

        settings = StudySettings(
            sampler=self.sampler,
            direction=self.direction,
            storage=self.storage,
            study_name=self.study_name,
            n_trials=self.n_trials,
            n_jobs=self.n_jobs,
            max_failure_rate=self.max_failure_rate,
            params=self.params,
            pruner=self.pruner,
            pruners=self.pruners,
            seeds_per_trial=self.seeds_per_trial,
            tie_tolerance=self.tie_tolerance,
        )
        try:
            run_study(settings, self.config, arguments, self._launch)
        except StudyError as error:
            reason = " ".join(str(error).split())
            if self.failed:
                reason = f"{reason}; {describe_failures(self.failed, self.jobs)}"
            end_with_failures(self.hydra_context, self.config, reason)

    def _launch(self, job_overrides: Sequence[Sequence[str]], first_job: int) -> Sequence[JobReturn]:
        """Compose the batch's jobs here first (a bad override fails before any job starts), then launch."""
        self.validate_batch_is_legal(job_overrides)
        results = self.launcher.launch(job_overrides, initial_job_idx=first_job)
        self.jobs += [list(job) for job in job_overrides]
        self.failed += [result for result in results if result.status == JobStatus.FAILED]
        return results


config_store = ConfigStore.instance()
config_store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=PROVIDER)
config_store.store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConf, provider=PROVIDER)
config_store.store(group="hydra/sweeper/sampler", name="random", node=RandomSamplerConf, provider=PROVIDER)
