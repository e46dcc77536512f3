"""What the HTML and LaTeX tables emphasise, read from the comparison objects rather than from cell text.

* the best mean of a metric with a known direction is shown in bold (the ★ of ``report.md``);
* a group whose paired difference with its baseline group is significant gets :data:`SIGNIFICANCE_MARK`
  (the ``*`` of the Markdown p-value column): its p-value, corrected over the metric's comparisons, is below
  the comparison's level ``α``, from at least :data:`~divergence_lab.report.statistics.MIN_PAIRS_FOR_TEST`
  paired seeds;
* hovering over a value shows the per-seed values it summarises.
"""

from __future__ import annotations

from divergence_lab.report.comparison import Baseline, GroupRow, MetricComparison
from divergence_lab.report.figure_style import short_number
from divergence_lab.report.metric_info import arrow
from divergence_lab.report.statistics import CORRECTIONS, MIN_PAIRS_FOR_TEST, PairedDifference
from divergence_lab.report.tables import CORRECTION_NAMES, TEST_NAMES, number

SIGNIFICANCE_MARK = "*"


def metric_column(metric: str) -> str:
    """The main table's column of ``metric`` (``test/acc ↑``), as :func:`tables.main_rows` names it."""
    return f"{metric} {arrow(metric)}".strip()


def claimed_p(difference: PairedDifference) -> float | None:
    """The p-value a significance claim rests on: the corrected one where present, else the test's own."""
    return getattr(difference, "p_adjusted", difference.p_value)


def is_significant(comparison: MetricComparison, row: GroupRow) -> bool:
    """The group's paired difference with its baseline group is significant (see the module docstring)."""
    difference = row.difference
    if row.is_baseline or difference is None or difference.n_pairs < MIN_PAIRS_FOR_TEST:
        return False
    p_value = claimed_p(difference)
    return p_value is not None and p_value < comparison.settings.alpha


def rows_by_label(comparison: MetricComparison) -> dict[str, GroupRow]:
    """The comparison's rows by the label the tables show (long decimals rounded)."""
    return {short_number(row.label): row for row in comparison.rows}


def seed_values(row: GroupRow) -> str:
    """``seed 0: 0.9000, seed 1: 0.9200`` (empty without values): the hover text of a summarised cell."""
    return ", ".join(f"seed {seed}: {number(value)}" for seed, value in row.per_seed.items())


def _correction(name: str) -> str:
    if CORRECTIONS[name] is None:  # p-values as the test gave them
        return "not corrected for multiple comparisons"
    return f"{CORRECTION_NAMES[name]}-corrected over each metric's comparisons"


def significance_note(
    comparisons: list[MetricComparison], baseline: Baseline | None, display_names: dict[str, str]
) -> str:
    """What :data:`SIGNIFICANCE_MARK` means, to follow the mark: the baseline, the test, the correction and
    the level (one clause per distinct setting); empty without a baseline."""
    if baseline is None or not comparisons:
        return ""
    sentences = list(
        dict.fromkeys(  # one clause per distinct test, correction and level (metrics differ in more)
            f"two-sided {TEST_NAMES[s.test]} test, {_correction(s.correction)}, p < {s.alpha:g}"
            for s in (comparison.settings for comparison in comparisons)
        )
    )
    return (
        f"differs from the baseline {baseline.describe(display_names)} (paired by seed, "
        f"at least {MIN_PAIRS_FOR_TEST} pairs): " + "; ".join(sentences) + "."
    )
