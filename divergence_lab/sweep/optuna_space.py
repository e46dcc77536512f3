"""The search space of an Optuna study, read from Hydra's override grammar.

A study's dimensions come from ``hydra.sweeper.params`` (``name: <expression>``) and from the command line's
overrides (``name=<expression>``, which win over a ``params`` entry of the same name). Each expression is:

* ``choice(a, b, ...)`` or ``a,b,...``: a categorical dimension over those values;
* ``range(start, stop[, step])``: the values Hydra's ``range`` enumerates (``stop`` excluded), sampled as
  integers when all three numbers are integers, else as floats on that step;
* ``interval(low, high)``: a real number in [low, high]; an integer in [low, high] when both bounds are
  written as integers (``interval(1, 8)``);
* ``tag(log, interval(low, high))``: the same, sampled on a log scale;
* anything else (``seed=3``): a fixed value every trial gets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

LOG_TAG = "log"
# the bounds of an interval() as written: interval(1, 8), interval(start=1, end=8)
INTERVAL_BOUNDS = re.compile(r"interval\(\s*(?:start\s*=\s*)?([^,()]+?)\s*,\s*(?:end\s*=\s*)?([^,()]+?)\s*\)")
INTEGER_LITERAL = re.compile(r"[+-]?\d+")


class SearchSpaceError(ValueError):
    """A search dimension Optuna cannot sample (a glob, an empty range): one line naming it."""


@dataclass
class SearchSpace:
    """What every trial gets: the sampled dimensions and the fixed overrides, keyed by override key."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # key -> the override as written (key=value)

    def trial_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides of one trial: the fixed ones, then ``key=value`` for each sampled parameter."""
        return [*self.fixed.values(), *(f"{key}={value}" for key, value in params.items())]


def parse_search_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> SearchSpace:
    """The search space of ``params`` (``hydra.sweeper.params``) and the command line's ``arguments``."""
    written = [f"{name}={value}" for name, value in (params or {}).items()]
    space = SearchSpace()
    for text, override in zip(
        [*written, *arguments], OverridesParser.create().parse_overrides([*written, *arguments]), strict=True
    ):
        key = override.get_key_element()
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        if override.is_sweep_override():
            space.distributions[key] = distribution_of(override, text)
        else:
            space.fixed[key] = text
    return space


def distribution_of(override: Override, text: str) -> BaseDistribution:
    """The Optuna distribution of one sweep override (``text`` is the override as written)."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        if not choices:
            raise SearchSpaceError(f"{text}: a choice needs at least one value")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        return _range_distribution(text, override, value)
    if isinstance(value, IntervalSweep):
        return _interval_distribution(text, value, _written_as_integers(text))
    raise SearchSpaceError(
        f"{text}: Optuna cannot sample this sweep; write choice(a, b), range(start, stop[, step]), "
        f"interval(low, high) or tag(log, interval(low, high))"
    )


def _range_distribution(subject: str, override: Override, sweep: RangeSweep) -> BaseDistribution:
    values = list(override.sweep_iterator())
    if not values:
        raise SearchSpaceError(f"{subject} is empty; write range(start, stop) with start < stop")
    if all(isinstance(number, int) for number in (sweep.start, sweep.stop, sweep.step)):
        return IntDistribution(int(sweep.start), int(values[-1]), step=int(sweep.step))
    return FloatDistribution(float(sweep.start), float(values[-1]), step=float(sweep.step))


def _interval_distribution(subject: str, sweep: IntervalSweep, integers: bool) -> BaseDistribution:
    log = LOG_TAG in sweep.tags
    if sweep.start >= sweep.end:
        raise SearchSpaceError(f"{subject} is empty or reversed; write interval(low, high) with low < high")
    if log and sweep.start <= 0:
        raise SearchSpaceError(f"{subject}: a log interval needs low > 0 (got low = {sweep.start})")
    if integers:
        return IntDistribution(int(sweep.start), int(sweep.end), log=log)
    return FloatDistribution(sweep.start, sweep.end, log=log)


def _written_as_integers(text: str) -> bool:
    """Whether the interval in ``text`` has both bounds written as integers: Hydra's parser makes every
    interval bound a float, so only the text tells ``interval(1, 8)`` from ``interval(1.0, 8.0)``."""
    match = INTERVAL_BOUNDS.search(text)
    return match is not None and all(INTEGER_LITERAL.fullmatch(bound) for bound in match.groups())
