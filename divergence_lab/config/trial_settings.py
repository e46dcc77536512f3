"""The pre-flight checks of an Optuna study's trial settings (``hydra.sweeper.*``), torch- and Optuna-free.

``pruner`` is one of :data:`PRUNER_SETTINGS` (``none``, ``median``, ``hyperband``; what each does:
:mod:`divergence_lab.run.optuna_pruners`) with integer settings ``pruners.<name>.<setting>`` at or above
their minimum, and a persistent ``storage`` when it prunes (the jobs report to the study there);
``seeds_per_trial`` is an integer >= 1; ``tie_tolerance`` a number >= 0. ``dlab``'s pre-flight runs them
before any job starts, and the sweeper again for apps that reach it without ``dlab``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from divergence_lab.config.accepts import is_finite_number, is_integer
from divergence_lab.ground.errors import ConfigError

NO_PRUNER = "none"
# pruner -> {setting: smallest allowed value}
PRUNER_SETTINGS: Mapping[str, Mapping[str, int]] = {
    NO_PRUNER: {},
    "median": {"n_startup_trials": 0, "n_warmup_steps": 0},
    "hyperband": {"min_resource": 1, "reduction_factor": 2},
}


def check_int_at_least(
    node: Mapping[str, Any], path: str, name: str, minimum: int, null_allowed: bool = True
) -> None:
    """``node[name]``, where present, must be an integer >= ``minimum`` (or null, with ``null_allowed``)."""
    value = node.get(name)
    if value is None and (null_allowed or name not in node):
        return
    if not is_integer(value) or value < minimum:
        raise ConfigError(f"{path}.{name} must be an integer >= {minimum} (got {value!r})")


def check_trial_settings(sweeper: Any) -> None:
    """``pruner`` is one of :data:`PRUNER_SETTINGS` with integer settings at or above their minimum and, when
    it prunes, a persistent ``storage``; ``seeds_per_trial`` >= 1; ``tie_tolerance`` a number >= 0."""
    pruner = sweeper.get("pruner", NO_PRUNER)
    if not isinstance(pruner, str) or pruner not in PRUNER_SETTINGS:
        raise ConfigError(
            f"hydra.sweeper.pruner must be one of {', '.join(PRUNER_SETTINGS)} (got {pruner!r})"
        )
    settings = (sweeper.get("pruners") or {}).get(pruner) or {}
    for name, minimum in PRUNER_SETTINGS[pruner].items():
        check_int_at_least(settings, f"hydra.sweeper.pruners.{pruner}", name, minimum, null_allowed=False)
    if pruner != NO_PRUNER and not sweeper.get("storage"):
        raise ConfigError(
            f"hydra.sweeper.pruner={pruner} needs a study the jobs can reach: set hydra.sweeper.storage "
            f"(sqlite:///<file>) and hydra.sweeper.study_name"
        )
    check_int_at_least(sweeper, "hydra.sweeper", "seeds_per_trial", 1, null_allowed=False)
    tolerance = sweeper.get("tie_tolerance", 0.0)
    if not is_finite_number(tolerance) or tolerance < 0:
        raise ConfigError(f"hydra.sweeper.tie_tolerance must be a number >= 0 (got {tolerance!r})")
