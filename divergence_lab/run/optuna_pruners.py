"""The pruner of an Optuna study: ``hydra.sweeper.pruner`` (``none``, ``median`` or ``hyperband``) and its
settings ``hydra.sweeper.pruners.<name>``.

Both the sweeper (which creates the study) and each trial's job (which asks the pruner after every epoch,
:mod:`divergence_lab.run.trial_reports`) build it from the same ``hydra.sweeper`` node. A trial's steps
are its epochs counted from 1; its intermediate value at step ``e`` is the mean over its seeds of
``optimized_metric`` after epoch ``e``.

* ``none``: Optuna's ``NopPruner``: intermediate values are recorded, no trial is pruned;
* ``median``: ``MedianPruner(n_startup_trials, n_warmup_steps)``: a trial whose value at epoch ``e`` is
  worse than the median of the earlier trials' values at ``e`` is pruned, once ``n_startup_trials`` trials
  have completed (pruned or failed ones do not count), and never at an epoch below ``n_warmup_steps``;
* ``hyperband``: ``HyperbandPruner(min_resource, reduction_factor)``: successive halving over brackets, a
  trial surviving a rung of ``min_resource * reduction_factor**i`` epochs only when among the best
  ``1 / reduction_factor`` there (the largest rung, ``max_resource``, is learnt from the first trials).

:data:`~divergence_lab.config.trial_settings.PRUNER_SETTINGS` names each pruner's settings with their
smallest allowed value, for the pre-flight checks; this module imports Optuna only to build a pruner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from divergence_lab.config.trial_settings import NO_PRUNER, PRUNER_SETTINGS

if TYPE_CHECKING:
    import optuna

PRUNER_CLASSES = {NO_PRUNER: "NopPruner", "median": "MedianPruner", "hyperband": "HyperbandPruner"}


def pruner_name(sweeper: Mapping[str, Any]) -> str:
    """``hydra.sweeper.pruner`` (``none`` when unset)."""
    return str(sweeper.get("pruner") or NO_PRUNER)


def build_pruner(sweeper: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner ``hydra.sweeper.pruner`` names, with its settings from ``hydra.sweeper.pruners``."""
    import optuna

    name = pruner_name(sweeper)
    settings = (sweeper.get("pruners") or {}).get(name) or {}
    arguments = {key: int(settings[key]) for key in PRUNER_SETTINGS[name] if key in settings}
    return getattr(optuna.pruners, PRUNER_CLASSES[name])(**arguments)
