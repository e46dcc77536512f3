"""The statistics of a sweep report: a group's spread over seeds, paired differences against a baseline,
and a rank that does not pretend to separate groups the seeds cannot separate.

For ``n`` values ``x_1..x_n`` of one group (one per seed):

* mean ``x̄``, sample standard deviation ``s = sqrt(Σ (x_i − x̄)² / (n − 1))`` (none for ``n = 1``),
* 95 % confidence interval of the mean ``x̄ ± t_{0.975, n−1} · s / sqrt(n)`` (Student's t, none for n = 1).

Against a baseline group, on the seeds both groups have, ``d_i = x_i − b_i``:

* mean difference ``d̄`` and its 95 % interval ``d̄ ± t_{0.975, m−1} · s_d / sqrt(m)`` over the ``m`` pairs,
* the two-sided paired t-test p-value (``scipy.stats.ttest_rel``), computed only for ``m ≥ 3``: with fewer
  pairs the report says that no test was made instead of printing a p-value. When every ``d_i`` is equal
  (``s_d = 0``) the t statistic is undefined and no p-value is given either.

Rank (for a metric whose better direction is known): groups sorted by mean, best first; the best group and
every group whose 95 % interval overlaps the best one's are *tied with the best* (rank ``1=``). Without
intervals (one seed) nothing is tied and the report says the order is not tested.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as scipy_stats

CONFIDENCE = 0.95
MIN_PAIRS_FOR_TEST = 3  # fewer paired seeds: no p-value, no significance claim


@dataclass(frozen=True)
class Summary:
    """A group's values for one metric: mean, sample std and the 95 % CI of the mean (None when n < 2)."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class PairedDifference:
    """``group − baseline`` over the seeds both have.

    ``p_value`` is None when ``n_pairs < MIN_PAIRS_FOR_TEST`` or the differences have no spread;
    ``unpaired_seeds`` lists seeds that only one of the two groups has (left out of the comparison).
    """

    n_pairs: int
    mean: float
    ci: tuple[float, float] | None
    p_value: float | None
    unpaired_seeds: tuple[int, ...]

    @property
    def tested(self) -> bool:
        return self.p_value is not None


def t_interval(values: list[float]) -> tuple[float, float] | None:
    """The 95 % Student-t confidence interval of the mean of ``values`` (None for fewer than two)."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = scipy_stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return float(mean - half), float(mean + half)


def summarise(values: list[float]) -> Summary:
    """Mean, sample std and 95 % CI of ``values`` (at least one value)."""
    if not values:
        raise ValueError("summarise needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else None
    return Summary(len(values), statistics.fmean(values), std, t_interval(values))


def paired_difference(group: dict[int, float], baseline: dict[int, float]) -> PairedDifference | None:
    """``group − baseline`` paired by seed (``{seed: value}`` each); None when no seed is shared."""
    shared = sorted(set(group) & set(baseline))
    unpaired = tuple(sorted(set(group) ^ set(baseline)))
    if not shared:
        return None
    differences = [group[seed] - baseline[seed] for seed in shared]
    p_value = None
    if len(shared) >= MIN_PAIRS_FOR_TEST and statistics.pstdev(differences) > 0:
        result = scipy_stats.ttest_rel([group[s] for s in shared], [baseline[s] for s in shared])
        p_value = float(result.pvalue)
    return PairedDifference(
        len(shared), statistics.fmean(differences), t_interval(differences), p_value, unpaired
    )


@dataclass(frozen=True)
class Rank:
    """Position by mean (1 = best) and whether the seeds separate the group from the best one.

    ``tied_with_best``: the group's 95 % CI overlaps the best group's (the best group itself is tied when
    any other group is); ``tested``: both intervals exist (at least two seeds each).
    """

    position: int
    tied_with_best: bool
    tested: bool

    def describe(self) -> str:
        """``1=`` for a group tied with the best, else its position."""
        return "1=" if self.tied_with_best else str(self.position)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def rank(summaries: dict[str, Summary], direction: int) -> dict[str, Rank]:
    """Rank groups by mean in ``direction`` (+1: higher is better, −1: lower); empty for direction 0."""
    if direction == 0 or not summaries:
        return {}
    order = sorted(summaries, key=lambda name: -direction * summaries[name].mean)
    best_ci = summaries[order[0]].ci
    tied = {
        name: (ci := summaries[name].ci) is not None and best_ci is not None and _overlap(ci, best_ci)
        for name in order[1:]
    }
    ranks = {order[0]: Rank(1, any(tied.values()), best_ci is not None)}
    for position, name in enumerate(order[1:], start=2):
        ranks[name] = Rank(position, tied[name], best_ci is not None and summaries[name].ci is not None)
    return ranks
