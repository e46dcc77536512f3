"""The ``## Across datasets`` section of ``report.md``: the settings × datasets table of the main metric
with ranks, the Friedman test and the Nemenyi critical difference, said as plainly as the data allow.

The numbers come from :mod:`divergence_lab.report.across_datasets`. The section is empty (no lines) unless
at least two datasets and two settings vary; with fewer than two datasets where every setting finished it
shows the table and says that no test was made. A Friedman p-value of at least α is written as "the study
could not separate them", never as an order; the critical difference says how far apart two average ranks
must be, and whether any pair can be that far apart with so few datasets.
"""

from __future__ import annotations

from divergence_lab.report.across_datasets import (
    MIN_DATASETS,
    RELIABLE_DATASETS,
    RELIABLE_SETTINGS,
    SIGNIFICANCE_LEVEL,
    AcrossDatasets,
    across_datasets,
    datasets_needed,
    nemenyi_q,
)
from divergence_lab.report.collect import SweepReport
from divergence_lab.report.metric_info import axis_label

BEST_MARK = "★"  # as in the report's main table
CD_FIGURE = "report_cd.png"
SMALL_P = 1e-3  # smaller p-values are shown as "< 0.001"


def _number(value: float) -> str:
    """Four decimals below 10 (accuracies, ECE ...), one above (seconds ...), as the report's tables."""
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _p_value(p: float) -> str:
    return "< 0.001" if p < SMALL_P else f"= {p:.3g}"


def _cell(analysis: AcrossDatasets, setting: int, dataset: int) -> str:
    mean, rank = analysis.means[setting][dataset], analysis.ranks[setting][dataset]
    if mean is None:
        return "—"
    shown = _number(mean) + (f" ({rank:g})" if rank is not None else "")
    return shown + (f" {BEST_MARK}" if setting in analysis.best(dataset) else "")


def table_lines(analysis: AcrossDatasets) -> list[str]:
    """The settings × datasets table (mean over seeds, rank within the dataset, ★ best), best average rank
    first, with an ``average rank`` column over the ranked datasets."""
    order = list(range(len(analysis.settings)))
    average = analysis.average_ranks
    if average is not None:
        order.sort(key=lambda j: average[j])
    header = [" / ".join(analysis.setting_keys), *analysis.datasets]
    if average is not None:
        header.append("average rank")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for j in order:
        cells = [analysis.settings[j], *(_cell(analysis, j, i) for i in range(len(analysis.datasets)))]
        if average is not None:
            cells.append(f"{average[j]:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _runs_note(analysis: AcrossDatasets) -> str:
    counts = sorted({n for row in analysis.runs for n in row if n})
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"n = {span} seed{'s' if counts[-1] > 1 else ''} per cell"


def friedman_lines(analysis: AcrossDatasets) -> list[str]:
    """The Friedman test, its power, the Nemenyi critical difference and the pairs it separates."""
    friedman, k, n = analysis.friedman, len(analysis.settings), len(analysis.ranked)
    if friedman is None:
        reason = (
            f"fewer than {MIN_DATASETS} datasets where every setting finished"
            if n < MIN_DATASETS
            else "every setting ties on every dataset"
        )
        return [f"- No Friedman test: {reason}."]
    verdict = (
        f"(< {SIGNIFICANCE_LEVEL}): the average ranks differ more than chance would make them"
        if friedman.separates
        else f"(≥ {SIGNIFICANCE_LEVEL}): **the study could not separate them**; the average ranks are no "
        "order"
    )
    lines = [
        f"- **Friedman test** over N = {n} datasets, k = {k} settings: χ²_F = {friedman.statistic:.3g} "
        f"(df = {friedman.dof}), p {_p_value(friedman.p_value)} {verdict}."
    ]
    if not friedman.reliable:
        consequence = (
            "read its p-value as approximate"
            if friedman.separates
            else "it has little power, and a difference it does not find may still be there"
        )
        lines.append(
            f"- N = {n} datasets and k = {k} settings are few for this test (its χ² approximation wants "
            f"N > {RELIABLE_DATASETS} and k > {RELIABLE_SETTINGS}, Demšar 2006): {consequence}."
        )
    cd = analysis.critical_difference
    q = nemenyi_q(k)
    lines.append(
        f"- **Nemenyi critical difference** (α = {SIGNIFICANCE_LEVEL}): CD = q_α · √(k(k+1)/(6N)) = "
        f"{q:.3f} · √({k}·{k + 1}/(6·{n})) = {cd:.2f}; two average ranks closer than CD are not told apart."
    )
    if cd is not None and cd >= k - 1:
        lines.append(
            f"- CD ≥ k − 1 = {k - 1}, the largest possible gap: no pair can be separated with {n} datasets "
            f"(it takes at least {datasets_needed(k)})."
        )
    lines += _pair_lines(analysis)
    return lines


def _pair_lines(analysis: AcrossDatasets) -> list[str]:
    if analysis.nemenyi_p is None or analysis.average_ranks is None:
        return []
    average, names = analysis.average_ranks, analysis.settings
    pairs = [
        (abs(average[a] - average[b]), a, b)
        for a in range(len(names))
        for b in range(a + 1, len(names))
        if analysis.nemenyi_p[a][b] < SIGNIFICANCE_LEVEL
    ]
    if not pairs:
        return ["- No pair differs by more than CD: the Friedman test finds a difference that the pairwise "
                "test cannot place."]  # fmt: skip
    shown = []
    for gap, a, b in sorted(pairs, reverse=True):
        better, worse = (a, b) if average[a] < average[b] else (b, a)
        p = analysis.nemenyi_p[a][b]
        shown.append(f"{names[better]} over {names[worse]} (ΔR = {gap:.2f}, p {_p_value(p)})")
    return [f"- Pairs that differ (Nemenyi): {'; '.join(shown)}; no other pair is separated."]


def across_datasets_lines(report: SweepReport) -> list[str]:
    """The ``## Across datasets`` section of ``report.md`` (ending with an empty line), or no lines when
    the sweep does not vary at least two datasets and two settings."""
    analysis = across_datasets(report)
    if analysis is None:
        return []
    lines = [
        "## Across datasets",
        "",
        f"{axis_label(analysis.metric)}: mean over seeds per dataset ({_runs_note(analysis)}); (r) = rank "
        f"within the dataset (1 = best, ties share their mean rank); {BEST_MARK} = best on the dataset. "
        "Ranks let datasets of different difficulty count alike.",
        "",
        *table_lines(analysis),
        "",
    ]
    if analysis.unranked:
        lines.append(
            f"- Not ranked or tested (a setting has no finished run there): {', '.join(analysis.unranked)}."
        )
    lines += friedman_lines(analysis)
    lines.append("")
    if analysis.friedman is not None and (report.sweep_dir / CD_FIGURE).is_file():
        lines += [
            "Critical-difference diagram: average rank (1 = best); a bar joins settings the tests could not "
            "separate (all of them when the Friedman test does not reject); the CD bar above the axis.",
            "",
            f"![report_cd]({CD_FIGURE})",
            "",
        ]
    return lines
