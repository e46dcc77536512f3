"""Which epoch a run tests: the best value of its selection metric, ties broken by a declared rule.

A :class:`SelectionRule` compares the validation values of a candidate epoch ``c`` with those of the epoch
selected so far ``s`` (epochs arrive in training order):

* ``c`` is preferred when its ``metric`` is strictly better than ``s``'s (higher for accuracies, lower for
  losses and calibration errors: :func:`~divergence_lab.metrics.names.lower_is_better`);
* on an exact tie of ``metric``, ``tie_break`` decides: ``first`` keeps the earlier epoch (what Lightning's
  ``ModelCheckpoint`` does), ``last`` takes the later one, and a validation metric (``val/nll``) takes ``c``
  when that metric is strictly better by its own direction, else keeps the earlier epoch.

Over epochs ``1..E`` the selected epoch is therefore the maximiser of the key ``(metric, tie metric)``
compared lexicographically, each component by its direction, and the earliest one among exact ties of both
(``first`` / ``last``: the earliest / latest epoch among the ties of ``metric``). A NaN is worse than any
number; two NaNs tie. A tie metric equal to ``metric`` adds nothing: such a rule is ``first``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from divergence_lab.metrics.names import lower_is_better

EPOCH_POSITIONS = ("first", "last")  # tie-breaks by position rather than by a second metric


def compare(metric: str, a: float, b: float) -> int:
    """``1`` when ``a`` is a strictly better value of ``metric`` than ``b``, ``-1`` when worse, ``0`` when
    equal; a NaN is worse than any number and equal to another NaN."""
    if math.isnan(a) or math.isnan(b):
        return int(math.isnan(b)) - int(math.isnan(a))
    if a == b:
        return 0
    better = a < b if lower_is_better(metric) else a > b
    return 1 if better else -1


def direction_word(metric: str) -> str:
    """``lowest`` for a loss-like metric, ``highest`` otherwise."""
    return "lowest" if lower_is_better(metric) else "highest"


@dataclass(frozen=True)
class SelectionRule:
    """The best ``metric``; among its exact ties, ``tie_break`` (``first``, ``last`` or a metric)."""

    metric: str
    tie_break: str

    @property
    def position(self) -> str | None:
        """``first`` or ``last`` when ties are broken by epoch position alone, else None."""
        if self.tie_break == self.metric:
            return "first"
        return self.tie_break if self.tie_break in EPOCH_POSITIONS else None

    @property
    def tie_metric(self) -> str | None:
        """The metric that breaks ties of ``metric``, or None for a positional rule."""
        return None if self.position else self.tie_break

    def required(self) -> tuple[str, ...]:
        """The validation metrics every epoch must report for the rule to apply."""
        return (self.metric,) if self.tie_metric is None else (self.metric, self.tie_metric)

    def prefers(self, candidate: Mapping[str, float], incumbent: Mapping[str, float] | None) -> bool:
        """Whether epoch ``candidate`` replaces the epoch selected so far (``incumbent``; None: none yet)."""
        if incumbent is None:
            return True
        primary = compare(self.metric, candidate[self.metric], incumbent[self.metric])
        if primary:
            return primary > 0
        if self.tie_metric is None:
            return self.position == "last"
        return compare(self.tie_metric, candidate[self.tie_metric], incumbent[self.tie_metric]) > 0

    def describe(self) -> str:
        """One line for ``metrics.json``: ``best val/acc, ties by lowest val/nll`` (then the earliest epoch),
        ``best val/acc, ties by first epoch`` or ``... by last epoch``."""
        if self.tie_metric is None:
            return f"best {self.metric}, ties by {self.position} epoch"
        return f"best {self.metric}, ties by {direction_word(self.tie_metric)} {self.tie_metric}"


def select_epoch(rule: SelectionRule, epochs: Sequence[Mapping[str, float]]) -> int:
    """The 1-based epoch ``rule`` selects among ``epochs`` (their validation values, in training order)."""
    if not epochs:
        raise ValueError("select_epoch needs at least one epoch")
    selected = 0
    for index, values in enumerate(epochs):
        if index and rule.prefers(values, epochs[selected]):
            selected = index
    return selected + 1
