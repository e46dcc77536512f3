"""Which setting is better across datasets: ranks within each dataset, the Friedman test and the Nemenyi
critical difference (J. Demšar, "Statistical comparisons of classifiers over multiple data sets", JMLR 7,
2006).

**Datasets and settings.** A sweep compares across datasets when a data key varies: the ``data`` config group
or a ``data.<field>`` that picks other examples (``data.source``, ``data.task`` ...). Fields that only split,
feed or perturb the same examples (:data:`NOT_DATASET_FIELDS`: batch sizes, label noise, labelled fraction
...) are conditions, not datasets. A *dataset* is one combination of the varying data keys; a *setting* (a
divergence, in a divergence × data grid) is one combination of the other varying keys. The ranked metric is
the first reported metric whose better direction is known
(:func:`~divergence_lab.report.metric_info.direction`).

**Ranks.** With ``x_ij`` the mean over seeds of setting ``j`` on dataset ``i`` (``N`` datasets on which all
``k`` settings finished), ``r_ij`` is the rank of ``x_ij`` among the ``k`` values of dataset ``i``: 1 for
the best, in the metric's better direction; tied values share the mean of their ranks. A dataset where the
settings differ by 0.1 % counts as much as one where they differ by 10 %: ranks compare across datasets
whose scales do not. The average rank is ``R_j = (1/N) Σ_i r_ij``.

**Friedman test** (H0: every setting has the same expected rank)::

    χ²_F = [12N / (k(k+1)) · Σ_j R_j² − 3N(k+1)] / C,   C = 1 − Σ_i Σ_t (t³ − t) / (N k (k² − 1)),

the inner sum over the groups of ``t`` tied values within dataset ``i`` (``C = 1`` without ties; the same
statistic as ``scipy.stats.friedmanchisquare``), and ``p = P(χ²_{k−1} ≥ χ²_F)``. It needs ``N ≥ 2``
datasets and ``k ≥ 2`` settings, and is not defined when every dataset ties every setting (``C = 0``). The
χ² approximation is good for ``N > 10`` and ``k > 5`` (Demšar, §3.2.2); with fewer datasets the test has
little power: ``p ≥ α`` says that the study could not separate the settings, not that they are equal, and
the average ranks are then no order.

**Nemenyi post-hoc**, made only when the Friedman test rejects at ``α``: two settings differ when their
average ranks differ by more than the critical difference ::

    CD = q_α · sqrt(k(k+1) / (6N)),   q_α = Q_{1−α}(k, ∞) / √2,

``Q`` the studentized range quantile (``q_0.05`` = 1.960, 2.343, 2.569, 2.728, 2.850 for k = 2 ... 6:
Demšar's Table 5a). The pairwise p-values are ``scikit_posthocs.posthoc_nemenyi_friedman``'s (the same
statistic: ``p < α`` exactly when ``|R_a − R_b| > CD``). No pair can differ when ``CD ≥ k − 1``, the largest
possible gap: that takes ``N > q_α² k(k+1) / (6(k−1)²)`` datasets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.figure_style import short_number
from divergence_lab.report.metric_info import direction

SIGNIFICANCE_LEVEL = 0.05  # α of the Friedman test and of the Nemenyi critical difference
DATA_GROUP = "data"
# data fields that split, feed or perturb the same examples: varying them makes conditions, not datasets
NOT_DATASET_FIELDS = (
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "label_noise",
    "noise_seed",
    "split_seed",
    "val_fraction",
    "test_fraction",
    "labelled_fraction",
    "balanced_sampling",
    "augment",
    "standardize",
    "flatten",
    "tokenizer",
    "max_length",
)
MIN_DATASETS = 2  # fewer datasets (with every setting finished): no test
MIN_SETTINGS = 2  # fewer settings: nothing to rank
RELIABLE_DATASETS = 10  # Demšar: the χ² approximation of the Friedman statistic wants N > 10 ...
RELIABLE_SETTINGS = 5  # ... and k > 5


@dataclass(frozen=True)
class Friedman:
    """The Friedman test of ``k`` settings over ``n`` datasets: ``χ²_F``, its degrees of freedom ``k − 1``
    and the p-value (see the module docstring)."""

    statistic: float
    dof: int
    p_value: float
    n: int
    k: int

    @property
    def separates(self) -> bool:
        """Whether the test rejects "all settings share one expected rank" at :data:`SIGNIFICANCE_LEVEL`."""
        return self.p_value < SIGNIFICANCE_LEVEL

    @property
    def reliable(self) -> bool:
        """Whether the χ² approximation holds (``N > 10`` and ``k > 5``, Demšar 2006)."""
        return self.n > RELIABLE_DATASETS and self.k > RELIABLE_SETTINGS


@dataclass
class AcrossDatasets:
    """One metric over settings × datasets: each cell's mean over seeds, the ranks and the tests.

    ``means[j][i]`` is setting ``j``'s mean on dataset ``i`` (None: no finished run there); ``ranked`` holds
    the indices of the datasets where every setting finished, the only ones ranked and tested;
    ``ranks[j][i]`` is None on the others. ``nemenyi_p`` (pairwise, settings × settings) is None unless the
    Friedman test rejects.
    """

    metric: str
    direction: int
    setting_keys: list[str]
    dataset_keys: list[str]
    settings: list[str]
    datasets: list[str]
    means: list[list[float | None]]
    runs: list[list[int]]  # finished runs (seeds) per cell
    ranked: list[int]
    ranks: list[list[float | None]]
    average_ranks: list[float] | None  # None with no ranked dataset
    friedman: Friedman | None
    critical_difference: float | None
    nemenyi_p: list[list[float]] | None

    @property
    def unranked(self) -> list[str]:
        """The datasets left out of ranks and tests (some setting has no finished run there)."""
        return [name for i, name in enumerate(self.datasets) if i not in self.ranked]

    def best(self, dataset: int) -> set[int]:
        """The settings with the best mean on ``dataset`` (several when tied)."""
        values = {j: row[dataset] for j, row in enumerate(self.means) if row[dataset] is not None}
        if not values:
            return set()
        top = max(self.direction * value for value in values.values())
        return {j for j, value in values.items() if self.direction * value == top}


def dataset_keys(varying: Sequence[str]) -> list[str]:
    """The varying keys that pick a dataset: ``data`` and ``data.<field>`` but :data:`NOT_DATASET_FIELDS`."""
    keys = []
    for key in varying:
        group, _, field = key.partition(".")
        if group == DATA_GROUP and field.rsplit(".", 1)[-1] not in NOT_DATASET_FIELDS:
            keys.append(key)
    return keys


def within_dataset_ranks(values: Sequence[float], better: int) -> list[float]:
    """Rank of each value among ``values`` (1 = best in direction ``better``: +1 higher, −1 lower), tied
    values sharing the mean of their ranks: ``[0.9, 0.8, 0.9]`` with ``better=+1`` → ``[1.5, 3, 1.5]``."""
    if better not in (1, -1):
        raise ValueError(f"better must be +1 or -1 (got {better})")
    return [float(r) for r in scipy_stats.rankdata([-better * v for v in values], method="average")]


def friedman_test(ranks: Sequence[Sequence[float]]) -> Friedman | None:
    """The Friedman test on within-dataset ranks (``ranks[i][j]``: dataset ``i``, setting ``j``, each row a
    ranking ``1..k`` with ties averaged); None for fewer than 2 datasets or settings, or all values tied."""
    table = np.asarray(ranks, dtype=float)
    if table.ndim != 2 or table.shape[0] < MIN_DATASETS or table.shape[1] < MIN_SETTINGS:
        return None
    n, k = table.shape
    ties = 0.0
    for row in table:  # tied values share a rank: t equal ranks in a row form one group of t ties
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    correction = 1.0 - ties / (n * k * (k * k - 1))
    if correction <= 0:
        return None
    average = table.mean(axis=0)
    statistic = (12.0 * n / (k * (k + 1)) * float(np.sum(average**2)) - 3.0 * n * (k + 1)) / correction
    statistic = max(statistic, 0.0)  # rounding of an exactly-zero statistic
    return Friedman(statistic, k - 1, float(scipy_stats.chi2.sf(statistic, k - 1)), n, k)


def nemenyi_q(k: int, alpha: float = SIGNIFICANCE_LEVEL) -> float:
    """``q_α`` of the Nemenyi test for ``k`` settings: the studentized range quantile ``Q_{1−α}(k, ∞)``
    divided by √2."""
    if k < MIN_SETTINGS:
        raise ValueError(f"the Nemenyi test compares at least {MIN_SETTINGS} settings (got k={k})")
    return float(scipy_stats.studentized_range.ppf(1.0 - alpha, k, np.inf)) / math.sqrt(2.0)


def critical_difference(k: int, n: int, alpha: float = SIGNIFICANCE_LEVEL) -> float:
    """The Nemenyi critical difference ``q_α · sqrt(k(k+1) / (6N))`` of ``k`` settings over ``n`` datasets."""
    if n < 1:
        raise ValueError(f"the critical difference needs at least one dataset (got N={n})")
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6.0 * n))


def datasets_needed(k: int, alpha: float = SIGNIFICANCE_LEVEL) -> int:
    """The fewest datasets for which the best and the worst of ``k`` settings can differ at all
    (``CD < k − 1``): the smallest ``N > q_α² k(k+1) / (6(k−1)²)``."""
    bound = nemenyi_q(k, alpha) ** 2 * k * (k + 1) / (6.0 * (k - 1) ** 2)
    return math.floor(bound) + 1


def nemenyi_p_values(scores: Sequence[Sequence[float]], better: int) -> list[list[float]]:
    """Pairwise Nemenyi p-values (settings × settings) of ``scores[i][j]`` (dataset ``i``, setting ``j``),
    from ``scikit_posthocs.posthoc_nemenyi_friedman``; its ranks are ascending, so the scores are turned
    to ``−better · x`` first (1 = best either way; the p-values do not depend on the direction)."""
    import scikit_posthocs

    oriented = -better * np.asarray(scores, dtype=float)
    return scikit_posthocs.posthoc_nemenyi_friedman(oriented).to_numpy().tolist()


def main_metric(report: SweepReport) -> str | None:
    """The metric ranked across datasets: the first reported one whose better direction is known."""
    return next((metric for metric in report.metrics if direction(metric) != 0), None)


def _ordered_labels(groups: list[Group], keys: list[str], report: SweepReport) -> list[str]:
    labels: list[str] = []
    for group in groups:
        label = short_number(group.label(keys, report.display_names))
        if label not in labels:
            labels.append(label)
    return labels


def across_datasets(report: SweepReport) -> AcrossDatasets | None:
    """Settings × datasets of the sweep's main metric with ranks and tests; None unless at least two
    datasets and two settings vary and a reported metric has a known better direction."""
    data_keys = dataset_keys(report.varying)
    other_keys = [key for key in report.varying if key not in data_keys]
    metric = main_metric(report)
    if metric is None or not other_keys:
        return None
    settings = _ordered_labels(report.groups, other_keys, report)
    datasets = _ordered_labels(report.groups, data_keys, report)
    if len(datasets) < MIN_DATASETS or len(settings) < MIN_SETTINGS:
        return None
    values: list[list[list[float]]] = [[[] for _ in datasets] for _ in settings]
    for group in report.groups:  # groups alike on every varying key (an extra fixed override) are pooled
        j = settings.index(short_number(group.label(other_keys, report.display_names)))
        i = datasets.index(short_number(group.label(data_keys, report.display_names)))
        values[j][i] += group.values.get(metric, [])
    means = [[float(np.mean(cell)) if cell else None for cell in row] for row in values]
    runs = [[len(cell) for cell in row] for row in values]
    better = direction(metric)
    ranked = [i for i in range(len(datasets)) if all(row[i] is not None for row in means)]
    ranks: list[list[float | None]] = [[None] * len(datasets) for _ in settings]
    for i in ranked:
        for j, r in enumerate(within_dataset_ranks([row[i] for row in means], better)):
            ranks[j][i] = r
    table = [[ranks[j][i] for j in range(len(settings))] for i in ranked]  # datasets × settings
    average = [float(np.mean(column)) for column in zip(*table, strict=True)] if table else None
    friedman = friedman_test(table)
    cd = critical_difference(len(settings), len(ranked)) if friedman is not None else None
    nemenyi = None
    if friedman is not None and friedman.separates:
        nemenyi = nemenyi_p_values([[means[j][i] for j in range(len(settings))] for i in ranked], better)
    return AcrossDatasets(
        metric, better, other_keys, data_keys, settings, datasets, means, runs, ranked, ranks, average,
        friedman, cd, nemenyi,
    )  # fmt: skip
