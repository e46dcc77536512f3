"""The statistics of a sweep report: a group's spread over seeds, and paired differences against a baseline
with a test, a corrected p-value, the smallest effect the study could detect and, where a margin is
declared, an equivalence test.

For ``n`` values ``x_1..x_n`` of one group (one per seed):

* mean ``x̄``, sample standard deviation ``s = sqrt(Σ (x_i − x̄)² / (n − 1))`` (none for ``n = 1``),
* 95 % confidence interval of the mean ``x̄ ± t_{0.975, n−1} · s / sqrt(n)`` (Student's t), only for
  ``n ≥ MIN_PAIRS_FOR_TEST``: with two seeds the interval rests on one degree of freedom and says nothing.
  A metric with a known range (accuracies and ECE in [0, 1]; see
  :func:`~divergence_lab.report.metric_info.bounds`) gets its interval clipped to that range and marked.

Against a baseline group, on the ``m`` seeds both groups have, ``d_i = x_i − b_i``
(:func:`paired_difference`):

* mean difference ``d̄``, its SD ``s_d``, and its interval: Student-t ``d̄ ± t_{0.975, m−1} · s_d / sqrt(m)``
  (tests ``t`` and ``wilcoxon``) or a seeded BCa bootstrap of the mean (test ``bootstrap``);
* the two-sided p-value of the chosen test: the paired t-test (``scipy.stats.ttest_rel``), the Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``, exact for small ``m``), or the paired sign-flip permutation
  test of ``d̄`` (``scipy.stats.permutation_test``, exact when ``2^m`` fits the resamples) that goes with the
  bootstrap interval;
* nothing of the above when ``m < MIN_PAIRS_FOR_TEST`` or every ``d_i`` is equal up to float rounding
  (``s_d = 0``: the statistic is undefined and an interval would have zero width);
* the **minimum detectable effect** (MDE): the true ``|Δ|`` that the paired t-test finds with probability
  ``power`` at level ``α_eff``, given ``m`` and the observed ``s_d``: ``MDE = d* · s_d`` where ``d*`` solves
  the noncentral-t power equation (``statsmodels`` ``TTestPower``). ``α_eff`` is the level the correction
  applies to one comparison in the worst case (``α / k`` for ``k`` comparisons under Holm or
  Benjamini–Hochberg, ``α`` without correction). The distribution-free tests can never reject when their
  smallest attainable p-value (``2 / 2^m`` for ``m`` pairs without ties) exceeds ``α_eff``: their MDE is
  then infinite;
* the seeds needed to detect a declared effect of interest ``δ``: the smallest ``m`` whose power at
  ``δ / s_d`` reaches ``power`` (same equation, solved for ``m``);
* with an equivalence margin ``ε``: the two one-sided paired t-tests (TOST, ``statsmodels``
  ``ttost_paired``) of ``H0: Δ ≤ −ε or Δ ≥ ε``; their p-value is the larger of the two.

The p-values of the comparisons of one metric against the baseline form one family and are corrected
together (:func:`correct`, ``statsmodels`` ``multipletests``: Holm by default, Benjamini–Hochberg, or none).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
MIN_PAIRS_FOR_TEST = 3  # fewer paired seeds: no interval, no p-value, no significance claim
MAX_SEEDS_NEEDED = 100_000  # beyond it the report says the effect is out of reach rather than a number
RELATIVE_ROUNDING = 1e-12  # differences this small (relative) are float rounding: the values are equal
TESTS = ("t", "wilcoxon", "bootstrap")
CORRECTIONS = {"holm": "holm", "bh": "fdr_bh", "none": None}  # our name -> statsmodels' multipletests name


@dataclass(frozen=True)
class Settings:
    """How the report tests: the test, the correction, the level, the power of the MDE, the bootstrap's
    resamples and seed, and a metric's declared equivalence margin and effect of interest (or None)."""

    test: str = "t"
    correction: str = "holm"
    alpha: float = 0.05
    power: float = 0.8
    resamples: int = 10_000
    bootstrap_seed: int = 0
    equivalence_margin: float | None = None
    effect_of_interest: float | None = None

    def per_comparison_alpha(self, comparisons: int) -> float:
        """``α_eff``: the level the correction gives one of ``comparisons`` tests in the worst case."""
        return self.alpha if CORRECTIONS[self.correction] is None else self.alpha / max(comparisons, 1)


@dataclass(frozen=True)
class Summary:
    """A group's values for one metric: mean, sample std (None for n = 1) and the 95 % CI of the mean
    (None below ``MIN_PAIRS_FOR_TEST`` values); ``clipped`` when the CI was cut at the metric's range."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None
    clipped: bool = False


@dataclass(frozen=True)
class PairedDifference:
    """``group − baseline`` over the seeds both have (see the module docstring for every number).

    ``p_value`` is None when the comparison was not tested (``untested_reason`` says why);
    ``p_adjusted`` is the p-value after the family's correction (equal to ``p_value`` before
    :func:`correct`); ``mde`` is ``math.inf`` when the test cannot reject with ``n_pairs`` pairs;
    ``unpaired_seeds`` lists seeds that only one of the two groups has (left out of the comparison).
    """

    n_pairs: int
    mean: float
    sd: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    unpaired_seeds: tuple[int, ...]
    test: str = "t"
    p_adjusted: float | None = None
    mde: float | None = None
    seeds_needed: int | None = None
    tost_p: float | None = None
    tost_p_adjusted: float | None = None
    positive: int = 0  # pairs with d_i > 0
    negative: int = 0  # pairs with d_i < 0
    by_seed: tuple[tuple[int, float], ...] = ()  # (seed, d_i) of every pair

    @property
    def tested(self) -> bool:
        return self.p_value is not None

    @property
    def untested_reason(self) -> str | None:
        """Why no test was made, or None when one was."""
        if self.tested:
            return None
        if self.n_pairs < MIN_PAIRS_FOR_TEST:
            return f"n={self.n_pairs} < {MIN_PAIRS_FOR_TEST}"
        return "the same Δ on every seed"


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Student-t confidence interval of the mean of ``values`` (None for fewer than two)."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return float(mean - half), float(mean + half)


def all_equal(values: np.ndarray | list[float]) -> bool:
    """Whether the values are one number up to float rounding (``RELATIVE_ROUNDING`` of the largest):
    ``0.9 − 0.925`` and ``0.8 − 0.825`` differ in their last bits, and a test on that would be noise."""
    values = np.asarray(values, dtype=np.float64)
    return bool(np.ptp(values) <= RELATIVE_ROUNDING * max(float(np.abs(values).max()), 1.0))


def summarise(values: list[float], bounds: tuple[float, float] | None = None) -> Summary:
    """Mean, sample std and 95 % CI of ``values`` (at least one value), the CI clipped to ``bounds``."""
    if not values:
        raise ValueError("summarise needs at least one value")
    std = statistics.stdev(values) if len(values) > 1 else None
    ci = t_interval(values) if len(values) >= MIN_PAIRS_FOR_TEST and not all_equal(values) else None
    clipped = False
    if ci is not None and bounds is not None:
        low, high = max(ci[0], bounds[0]), min(ci[1], bounds[1])
        clipped = (low, high) != ci
        ci = (low, high)
    return Summary(len(values), statistics.fmean(values), std, ci, clipped)


def smallest_attainable_p(test: str, pairs: int) -> float:
    """The smallest two-sided p-value ``test`` can give with ``pairs`` untied pairs (0 for the t-test)."""
    return 0.0 if test == "t" else min(1.0, 2.0 / 2**pairs)


def minimum_detectable_effect(sd: float, pairs: int, alpha: float, power: float, test: str = "t") -> float:
    """The true mean difference the paired test detects with probability ``power`` at level ``alpha``."""
    if smallest_attainable_p(test, pairs) > alpha:
        return math.inf
    from statsmodels.stats.power import TTestPower

    effect = TTestPower().solve_power(effect_size=None, nobs=pairs, alpha=alpha, power=power)
    return float(effect) * sd


def seeds_needed(effect: float, sd: float, alpha: float, power: float) -> int | None:
    """The fewest paired seeds (at least ``MIN_PAIRS_FOR_TEST``) whose paired t-test detects ``effect`` with
    ``power``; None when ``sd`` = 0 or more than ``MAX_SEEDS_NEEDED`` would be needed. The power of ``m``
    pairs (statsmodels ``TTestPower``) grows with ``m``: the smallest such ``m`` is found by doubling, then
    bisection (statsmodels' own solver returns NaN when the root lies below 2 pairs or very far out)."""
    if sd <= 0 or effect == 0:
        return None
    from statsmodels.stats.power import TTestPower

    analysis, size = TTestPower(), abs(effect) / sd

    def enough(pairs: int) -> bool:
        return analysis.power(effect_size=size, nobs=pairs, alpha=alpha) >= power

    low, high = MIN_PAIRS_FOR_TEST - 1, MIN_PAIRS_FOR_TEST  # enough(low) is False or low is below the floor
    while not enough(high):
        if high >= MAX_SEEDS_NEEDED:
            return None
        low, high = high, min(2 * high, MAX_SEEDS_NEEDED)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def _bootstrap_interval(differences: np.ndarray, settings: Settings) -> tuple[float, float]:
    """The seeded BCa bootstrap interval of the mean difference (percentile where BCa is undefined)."""
    rng = np.random.default_rng(settings.bootstrap_seed)
    for method in ("BCa", "percentile"):
        result = scipy_stats.bootstrap(
            (differences,), np.mean, confidence_level=CONFIDENCE, n_resamples=settings.resamples,
            method=method, rng=rng,
        )  # fmt: skip
        low, high = result.confidence_interval
        if math.isfinite(low) and math.isfinite(high):
            break
    return float(low), float(high)


def _p_value(differences: np.ndarray, settings: Settings) -> float:
    if settings.test == "t":
        return float(scipy_stats.ttest_1samp(differences, 0.0).pvalue)
    if settings.test == "wilcoxon":
        return float(scipy_stats.wilcoxon(differences).pvalue)
    result = scipy_stats.permutation_test(
        (differences,), np.mean, permutation_type="samples", n_resamples=settings.resamples,
        rng=np.random.default_rng(settings.bootstrap_seed),
    )  # fmt: skip
    return float(result.pvalue)


def _tost(differences: np.ndarray, margin: float) -> float:
    from statsmodels.stats.weightstats import ttost_paired

    p_value, _, _ = ttost_paired(differences, np.zeros_like(differences), -margin, margin)
    return float(p_value)


def paired_difference(
    group: dict[int, float],
    baseline: dict[int, float],
    settings: Settings | None = None,
    comparisons: int = 1,
) -> PairedDifference | None:
    """``group − baseline`` paired by seed (``{seed: value}`` each); None when no seed is shared.

    ``comparisons`` is the size of the family the p-value will be corrected in (it sets ``α_eff``).
    """
    settings = settings or Settings()
    shared = sorted(set(group) & set(baseline))
    unpaired = tuple(sorted(set(group) ^ set(baseline)))
    if not shared:
        return None
    d = np.array([group[seed] - baseline[seed] for seed in shared], dtype=np.float64)
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else None
    counts = {"positive": int((d > 0).sum()), "negative": int((d < 0).sum())}
    by_seed = tuple(zip(shared, map(float, d), strict=True))
    base = PairedDifference(
        len(d), float(np.mean(d)), sd, None, None, unpaired, settings.test, **counts, by_seed=by_seed
    )
    if len(d) < MIN_PAIRS_FOR_TEST or all_equal(d):
        return base
    alpha = settings.per_comparison_alpha(comparisons)
    interval = _bootstrap_interval(d, settings) if settings.test == "bootstrap" else t_interval(list(d))
    p_value = _p_value(d, settings)
    margin, effect = settings.equivalence_margin, settings.effect_of_interest
    return replace(
        base,
        ci=interval,
        p_value=p_value,
        p_adjusted=p_value,
        mde=minimum_detectable_effect(sd, len(d), alpha, settings.power, settings.test),
        seeds_needed=None if effect is None else seeds_needed(effect, sd, alpha, settings.power),
        tost_p=None if margin is None else _tost(d, margin),
    )


def adjust(p_values: list[float], correction: str) -> list[float]:
    """``p_values`` corrected as one family: ``holm``, ``bh`` (Benjamini–Hochberg) or ``none``."""
    method = CORRECTIONS[correction]
    if method is None or not p_values:
        return list(p_values)
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(p_values, method=method)[1]]


def correct(differences: list[PairedDifference | None], correction: str) -> list[PairedDifference | None]:
    """The family's tested p-values (and TOST p-values) replaced by their corrected values."""
    tested = [i for i, d in enumerate(differences) if d is not None and d.tested]
    corrected = list(differences)
    adjusted = adjust([differences[i].p_value for i in tested], correction)  # type: ignore[union-attr]
    with_tost = [i for i in tested if differences[i].tost_p is not None]  # type: ignore[union-attr]
    adjusted_tost = adjust([differences[i].tost_p for i in with_tost], correction)  # type: ignore[union-attr]
    for i, p in zip(tested, adjusted, strict=True):
        corrected[i] = replace(differences[i], p_adjusted=p)  # type: ignore[arg-type]
    for i, p in zip(with_tost, adjusted_tost, strict=True):
        corrected[i] = replace(corrected[i], tost_p_adjusted=p)  # type: ignore[arg-type]
    return corrected
