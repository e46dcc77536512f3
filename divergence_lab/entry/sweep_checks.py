"""Refuse a bad sweep before Hydra starts it: the sweeper's settings and search space, and the launcher's.

:func:`check_sweep_settings` reads the ``hydra`` node of the composed config (as ``hydra.compose(...,
return_hydra_config=True)`` returns it) and raises :class:`~divergence_lab.config.checks.ConfigError` with
one line that names the key, the bad value and what is allowed. So ``dlab -m hparams_search=kd_optuna
'method.alpha=interval(1.0, 0.1)'`` stops before any trial runs, instead of failing in Optuna after the
study was created, and ``dlab -m hydra/launcher=slurm hydra.launcher.timeout_min=0 ...`` stops before any
job is submitted.

* Every sweeper: ``hydra.sweeper.params`` must parse with Hydra's override grammar, as the sweeper parses it.
* The Optuna sweeper: each search dimension (``interval`` / ``range`` ordered and non-empty, finite bounds,
  ``tag(log, ...)`` above 0, no ``glob``), ``n_trials`` and ``n_jobs`` >= 1, ``max_failure_rate`` in [0, 1],
  and a ``direction`` that agrees with ``optimized_metric`` (maximize an accuracy, minimize a loss); its
  ``pruner`` (a name of :data:`~divergence_lab.config.trial_settings.PRUNER_SETTINGS`, whose settings are
  integers at or above their minimum; a pruner needs a ``storage`` the jobs can reach), ``seeds_per_trial``
  >= 1 and ``tie_tolerance`` >= 0 (:func:`check_trial_settings`).
* Launchers: joblib's ``n_jobs``; submitit's (local and SLURM) time limit, counts and signal delay.

Only Hydra's override parser and OmegaConf are imported: no deep-learning framework, no Optuna.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from omegaconf import DictConfig

from divergence_lab.config.accepts import is_finite_number, is_integer
from divergence_lab.config.trial_settings import check_int_at_least, check_trial_settings
from divergence_lab.ground.errors import ConfigError
from divergence_lab.metrics.names import lower_is_better

SWEEP_FORMS = "a value, a comma list a,b, choice(a, b), range(start, stop[, step]) or interval(low, high)"
SEARCH_FORMS = "choice(a, b), range(start, stop[, step]), interval(low, high), tag(log, interval(low, high))"
OPTUNA_SWEEPERS = ("OptunaSweeper", "ResumableOptunaSweeper")
DIRECTIONS = ("minimize", "maximize")
SECONDS_PER_MINUTE = 60
SUBMITIT_POSITIVE_INTS = (
    "timeout_min",
    "cpus_per_task",
    "tasks_per_node",
    "nodes",
    "array_parallelism",
    "max_parallel_jobs",
)
SUBMITIT_NON_NEGATIVE_INTS = ("max_num_timeout", "gpus_per_node")  # 0: never requeued / no GPU


def check_sweep_settings(cfg: DictConfig, sweep_arguments: Sequence[str] = ()) -> None:
    """Check the sweeper and launcher settings of ``cfg.hydra``; the first bad one raises ConfigError.

    ``sweep_arguments`` are the command line's overrides as the sweeper receives them (``method.alpha=
    interval(0.1, 1.0)``: Hydra's compose refuses sweep overrides, so they are not in ``cfg``); they are
    checked as search dimensions too. A config without its ``hydra`` node has nothing to check.
    """
    hydra = cfg.get("hydra")
    if hydra is None:
        return
    check_sweeper(hydra.sweeper, str(cfg.get("optimized_metric")), sweep_arguments)
    if _class_name(hydra.sweeper) in OPTUNA_SWEEPERS and cfg.get("data", {}).get("val_fraction") == 0:
        raise ConfigError(
            "data.val_fraction=0 (protocol=full_train_last_epoch) leaves no validation metric for the Optuna "
            "sweeper to tune on: use protocol=heldout"
        )
    check_launcher(hydra.launcher)


def check_sweeper(sweeper: DictConfig, optimized_metric: str, sweep_arguments: Sequence[str] = ()) -> None:
    """``hydra.sweeper``: its ``params`` (and ``sweep_arguments``) parse; with the Optuna sweeper, each is a
    valid search dimension and the study settings are checked."""
    optuna = _class_name(sweeper) in OPTUNA_SWEEPERS
    params = (sweeper.get("params") or {}).items()
    overrides = [(f"hydra.sweeper.params.{name}={value}", f"{name}={value}") for name, value in params]
    for subject, override in [*overrides, *((argument, argument) for argument in sweep_arguments)]:
        value = parse_override(subject, override).value()
        if optuna:
            check_search_dimension(subject, value)
    if optuna:
        check_optuna_settings(sweeper, optimized_metric)


def parse_override(subject: str, override: str) -> Override:
    """Parse ``override`` (``name=value``) as a sweeper parses its params; refuse what Hydra's grammar
    rejects, naming ``subject`` (the setting as the user wrote it)."""
    try:
        return OverridesParser.create().parse_override(override)
    except HydraException as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"{subject} does not parse ({reason}); write {SWEEP_FORMS}") from None


def check_search_dimension(subject: str, value: Any) -> None:
    """One dimension of an Optuna search space (``subject`` = ``name=value`` as written): a fixed value, a
    choice, an ordered non-empty range or interval with finite bounds (a log interval above 0), no glob."""
    if isinstance(value, Glob):
        raise ConfigError(f"{subject}: the Optuna sweeper cannot search a glob(); write {SEARCH_FORMS}")
    if isinstance(value, IntervalSweep):
        _check_interval(subject, value)
    elif isinstance(value, RangeSweep):
        _check_range(subject, value)


def _check_finite(subject: str, bounds: Iterable[float]) -> None:
    if not all(math.isfinite(bound) for bound in bounds):
        raise ConfigError(f"{subject} has a NaN or infinite bound; bounds must be finite numbers")


def _check_interval(subject: str, interval: IntervalSweep) -> None:
    _check_finite(subject, (interval.start, interval.end))
    if interval.start >= interval.end:
        raise ConfigError(f"{subject} is empty or reversed; write interval(low, high) with low < high")
    if "log" in interval.tags and interval.start <= 0:
        raise ConfigError(f"{subject}: a log interval needs low > 0 (got low = {interval.start})")


def _check_range(subject: str, sweep: RangeSweep) -> None:
    _check_finite(subject, (sweep.start, sweep.stop, sweep.step))
    if sweep.step <= 0:
        raise ConfigError(f"{subject}: the Optuna sweeper needs a step > 0 (got step = {sweep.step})")
    if sweep.start >= sweep.stop:
        raise ConfigError(f"{subject} is empty or reversed; write range(start, stop) with start < stop")


def check_optuna_settings(sweeper: DictConfig, optimized_metric: str) -> None:
    """``n_trials`` and ``n_jobs`` >= 1, ``max_failure_rate`` in [0, 1], ``direction`` fits the metric."""
    check_int_at_least(sweeper, "hydra.sweeper", "n_trials", 1)
    check_int_at_least(sweeper, "hydra.sweeper", "n_jobs", 1)
    rate = sweeper.get("max_failure_rate")
    if not is_finite_number(rate) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"hydra.sweeper.max_failure_rate must be a number in [0, 1] (got {rate!r})")
    check_direction(sweeper.get("direction"), optimized_metric)
    check_trial_settings(sweeper)


def metric_direction(metric: str) -> str:
    """The direction a study must take on ``metric``, the way a run picks its best checkpoint by it
    (:func:`~divergence_lab.metrics.names.lower_is_better`): ``minimize`` for a loss or a calibration error
    (``val/nll``, ``val/ece``, ``val/brier``, ``val/loss``), ``maximize`` for an accuracy (``val/acc``)."""
    return "minimize" if lower_is_better(metric) else "maximize"


def check_direction(direction: Any, optimized_metric: str) -> None:
    """``direction`` is minimize or maximize (the plugin's default is its ``Direction`` enum) and agrees with
    ``optimized_metric``: a run returns that one value."""
    name = getattr(direction, "name", direction)
    if not isinstance(name, str) or name not in DIRECTIONS:
        raise ConfigError(
            f"hydra.sweeper.direction must be minimize or maximize: a run returns one value, "
            f"optimized_metric (got {direction!r})"
        )
    wanted = metric_direction(optimized_metric)
    if name != wanted:
        better = "higher" if wanted == "maximize" else "lower"
        raise ConfigError(
            f"hydra.sweeper.direction={name} disagrees with optimized_metric={optimized_metric} ({better} is "
            f"better); use hydra.sweeper.direction={wanted}"
        )


def check_launcher(launcher: DictConfig) -> None:
    """``hydra.launcher``: the checks of its kind (joblib, submitit local or SLURM); others pass."""
    check = LAUNCHER_CHECKS.get(_class_name(launcher))
    if check is not None:
        check(launcher)


def check_joblib_launcher(launcher: DictConfig) -> None:
    """joblib runs ``n_jobs`` jobs at once, or all CPUs but ``|n_jobs| - 1`` when negative; 0 is refused."""
    n_jobs = launcher.get("n_jobs")
    if not is_integer(n_jobs) or n_jobs == 0:
        raise ConfigError(
            f"hydra.launcher.n_jobs must be an integer >= 1, or negative for all CPUs but |n_jobs| - 1 "
            f"(-1 = all CPUs) (got {n_jobs!r})"
        )


def check_submitit_launcher(launcher: DictConfig) -> None:
    """submitit (local or SLURM): positive time limit and counts, a signal delay within the time limit."""
    for name in SUBMITIT_POSITIVE_INTS:
        check_int_at_least(launcher, "hydra.launcher", name, 1)
    for name in SUBMITIT_NON_NEGATIVE_INTS:
        check_int_at_least(launcher, "hydra.launcher", name, 0)
    check_int_at_least(launcher, "hydra.launcher", "signal_delay_s", 0)
    delay, timeout_min = launcher.get("signal_delay_s"), launcher.get("timeout_min")
    if delay is not None and timeout_min is not None and delay >= timeout_min * SECONDS_PER_MINUTE:
        raise ConfigError(
            f"hydra.launcher.signal_delay_s must be below the time limit, hydra.launcher.timeout_min="
            f"{timeout_min} = {timeout_min * SECONDS_PER_MINUTE} s (got {delay})"
        )


LAUNCHER_CHECKS: Mapping[str, Callable[[DictConfig], None]] = {
    "JoblibLauncher": check_joblib_launcher,
    "LocalLauncher": check_submitit_launcher,
    "CappedLocalLauncher": check_submitit_launcher,
    "SlurmLauncher": check_submitit_launcher,
}


def _class_name(node: DictConfig) -> str:
    """The class a sweeper or launcher node instantiates, without its module."""
    return str(node.get("_target_", "")).rsplit(".", 1)[-1]
