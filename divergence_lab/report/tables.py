"""The report as text: ``report.md``, ``report.csv``, ``report_seeds.csv`` and the tables on the terminal.

Cells: ``mean ± std`` over seeds (``± n/a`` for one seed), ★ on the best mean of a metric whose better
direction is known; per metric a comparison table (95 % CI, per-seed values, the paired difference with its
baseline group, its 95 % CI and paired t-test p-value, the rank; see
:mod:`divergence_lab.report.statistics`); the provenance block; the sweep's progress.
"""

from __future__ import annotations

import csv
from pathlib import Path

from divergence_lab.report.collect import SweepReport
from divergence_lab.report.comparison import Baseline, GroupRow, MetricComparison
from divergence_lab.report.figure_style import short_number
from divergence_lab.report.metric_info import arrow, axis_label
from divergence_lab.report.provenance import Provenance
from divergence_lab.report.statistics import CONFIDENCE, MIN_PAIRS_FOR_TEST, Summary

BEST_MARK = "★"
NO_BASELINE = {
    False: "A single group: nothing to compare.",
    True: "No baseline: the trials of a search each ran their own settings. Rerun the best ones over seeds "
    "(`best.yaml` holds the command) and compare those, or name one with `--baseline`.",
}
SIGNIFICANCE_LEVEL = 0.05  # a p-value below it is marked; never claimed from fewer than MIN_PAIRS_FOR_TEST
FIGURES = (
    ("report.png", "Final metrics", "Bars: mean over seeds; error bars: ± std."),
    ("report_lines.png", "Against the numeric sweep key", "Mean over seeds; error bars: ± std."),
    (
        "report_curves.png",
        "Per-epoch curves",
        "Validation metrics per epoch (GCD: Old / New / All accuracy on D_u first); mean over seeds, "
        "band: ± std.",
    ),
    (
        "report_reliability.png",
        "Reliability diagrams",
        "Pooled over seeds; per run: `<job>/reliability.png`.",
    ),
)


def number(value: float) -> str:
    """Four decimals for values below 10 (accuracies, ECE ...), one for larger ones (seconds ...)."""
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def signed(value: float) -> str:
    return ("+" if value >= 0 else "−") + number(abs(value))


def mean_std(summary: Summary | None) -> str:
    if summary is None:
        return "—"
    std = "n/a" if summary.std is None else number(summary.std)
    return f"{number(summary.mean)} ± {std}"


def interval(ci: tuple[float, float] | None, sign: bool = False) -> str:
    if ci is None:
        return "n/a"
    show = signed if sign else number
    return f"[{show(ci[0])}, {show(ci[1])}]"


def p_value_cell(row: GroupRow) -> str:
    difference = row.difference
    if difference is None:
        return ""
    if difference.n_pairs < MIN_PAIRS_FOR_TEST:
        return f"not tested (n={difference.n_pairs} < {MIN_PAIRS_FOR_TEST})"
    if difference.p_value is None:
        return "not tested (identical differences)"
    shown = "< 0.001" if difference.p_value < 1e-3 else f"{difference.p_value:.3g}"
    return shown + (" *" if difference.p_value < SIGNIFICANCE_LEVEL else "")


def difference_cell(row: GroupRow) -> str:
    if row.is_baseline:
        return "baseline"
    if row.counterpart_missing:
        return "no baseline run"
    if row.difference is None:
        return "no shared seed"
    d = row.difference
    return f"{signed(d.mean)} {interval(d.ci, sign=True)} (n={d.n_pairs})"


def _is_best(comparison: MetricComparison, row: GroupRow) -> bool:
    """The best mean of a metric with a direction, among several groups (every group sharing it)."""
    best = comparison.best
    if best is None or row.summary is None or len(comparison.rows) < 2:
        return False
    return row.summary.mean == best.summary.mean


def main_rows(report: SweepReport, comparisons: list[MetricComparison]) -> list[dict[str, str]]:
    """One row per group: its label, finished seeds, and ``mean ± std`` per metric (★ = best mean)."""
    header = " / ".join(report.varying) or "group"
    rows = []
    for index, group in enumerate(report.groups):
        row = {header: short_number(report.label(group)), "n": str(len(group.seeds))}
        for comparison in comparisons:
            cell = comparison.rows[index]
            best = _is_best(comparison, cell)
            row[f"{comparison.metric} {arrow(comparison.metric)}".strip()] = mean_std(cell.summary) + (
                f" {BEST_MARK}" if best else ""
            )
        rows.append(row)
    return rows


def comparison_rows(comparison: MetricComparison) -> list[dict[str, str]]:
    """The comparison table of one metric, best first when the metric has a direction."""
    rows = sorted(comparison.rows, key=lambda r: r.rank.position if r.rank else 0)
    return [
        {
            "group": short_number(row.label),
            "n": str(row.summary.n if row.summary else 0),
            "mean ± std": mean_std(row.summary),
            f"{CONFIDENCE:.0%} CI": interval(row.summary.ci if row.summary else None),
            "Δ vs baseline [95% CI]": difference_cell(row),
            "p (paired t)": p_value_cell(row),
            "rank": row.rank.describe() if row.rank else "",
        }
        for row in rows
    ]


def notes(
    comparison: MetricComparison, baseline: Baseline | None, display_names: dict[str, str]
) -> list[str]:
    """What the reader must know about one metric's comparison: unmatched seeds, untested differences."""
    lines = []
    for row in comparison.rows:
        if row.difference and row.difference.unpaired_seeds:
            seeds = ", ".join(str(s) for s in row.difference.unpaired_seeds)
            label = short_number(row.label)
            lines.append(f"{label}: seed(s) {seeds} without a baseline run of the same seed, left out of Δ.")
        if row.counterpart_missing and baseline is not None:
            label, shown = short_number(row.label), baseline.describe(display_names)
            lines.append(f"{label}: no finished baseline run ({shown}) to pair with.")
    if any(row.difference and row.difference.n_pairs < MIN_PAIRS_FOR_TEST for row in comparison.rows):
        lines.append(
            f"Fewer than {MIN_PAIRS_FOR_TEST} paired seeds: no significance is claimed; run more seeds."
        )
    if comparison.rows and all(row.rank is not None and not row.rank.tested for row in comparison.rows):
        lines.append("One seed per group: the order is not tested (no confidence intervals).")
    return lines


def _markdown_table(rows: list[dict[str, str]]) -> list[str]:
    header = list(rows[0])
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row[c] for c in header) + " |" for row in rows),
    ]


def _seed_cell(row: GroupRow, seed: int) -> str:
    return number(row.per_seed[seed]) if seed in row.per_seed else "—"


def seed_rows(comparison: MetricComparison) -> list[dict[str, str]]:
    seeds = sorted({seed for row in comparison.rows for seed in row.per_seed})
    return [
        {
            "group": row.label,
            **{f"seed {s}": number(row.per_seed[s]) if s in row.per_seed else "—" for s in seeds},
        }
        for row in comparison.rows
    ]


def provenance_lines(report: SweepReport, provenance: Provenance) -> list[str]:
    """The provenance block: runs and seeds, varying and fixed settings, teachers, code, time, jobs."""
    seeds = sorted({seed for group in report.groups for seed in group.seeds if isinstance(seed, int)})
    progress = report.progress_lines()
    jobs = progress[0] if progress else "every job finished"
    shown_seeds = ", ".join(map(str, seeds)) or "not recorded"
    lines = [f"- **Runs**: {provenance.runs} finished, seeds {shown_seeds}; {jobs}"]
    for title, items in (
        ("Varying", provenance.varying_lines()),
        ("Held fixed", provenance.settings_lines()),
        ("Teachers", provenance.teacher_lines()),
        ("Code", provenance.code_lines()),
        ("Time", provenance.time_lines()),
        ("Unfinished jobs", progress[1:]),
    ):
        if items:
            lines.append(f"- **{title}**:")
            lines += [f"  - {item.removeprefix('- ')}" for item in items]
    return lines


def write_markdown(
    report: SweepReport,
    comparisons: list[MetricComparison],
    baseline: Baseline | None,
    provenance: Provenance,
    path: Path,
) -> None:
    """``report.md``: the main table, one comparison per metric, per-seed values, provenance, figures."""
    lines = [
        f"# Sweep report: `{report.sweep_dir}`",
        "",
        f"mean ± sample std over seeds (± n/a: one seed); n = finished seeds; {BEST_MARK} = best mean.",
        "",
        *_markdown_table(main_rows(report, comparisons)),
        "",
        "## Which is better?",
        "",
        f"Baseline: **{baseline.describe(report.display_names)}**, paired by seed with the group that shares "
        "the other varying values. Δ = group − baseline; CI: Student-t 95 %; p: two-sided paired t-test "
        f"(* p < {SIGNIFICANCE_LEVEL}, not corrected for multiple comparisons); rank 1= : the 95 % CI "
        "overlaps the best group's."
        if baseline
        else NO_BASELINE[len(report.groups) > 1],
        "",
    ]
    for comparison in comparisons:
        lines += [
            f"### {axis_label(comparison.metric)}",
            "",
            *_markdown_table(comparison_rows(comparison)),
            "",
        ]
        lines += [f"- {note}" for note in notes(comparison, baseline, report.display_names)]
        lines += [""]
    lines += ["## Per-seed values", ""]
    for comparison in comparisons:
        if any(row.per_seed for row in comparison.rows):
            lines += [f"### {comparison.metric}", "", *_markdown_table(seed_rows(comparison)), ""]
    lines += ["## Provenance", "", *provenance_lines(report, provenance), ""]
    for name, title, caption in FIGURES:
        if (report.sweep_dir / name).is_file():
            lines += [f"## {title}", "", caption, "", f"![{Path(name).stem}]({name})", ""]
    path.write_text("\n".join(lines))


def write_csv(report: SweepReport, comparisons: list[MetricComparison], path: Path) -> None:
    """``report.csv``: one row per group and metric with every number of the comparison (empty: none)."""

    def cell(value: float | None) -> str:
        return "" if value is None else repr(value)

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["group", "metric", "n", "mean", "std", "ci_low", "ci_high", "is_baseline", "diff_mean",
             "diff_ci_low", "diff_ci_high", "p_value", "n_pairs", "rank", "tied_with_best"]
        )  # fmt: skip
        for comparison in comparisons:
            for row in comparison.rows:
                s, d = row.summary, row.difference
                writer.writerow(
                    [
                        row.label, comparison.metric, s.n if s else 0,
                        cell(s.mean if s else None), cell(s.std if s else None),
                        cell(s.ci[0] if s and s.ci else None), cell(s.ci[1] if s and s.ci else None),
                        row.is_baseline, cell(d.mean if d else None),
                        cell(d.ci[0] if d and d.ci else None), cell(d.ci[1] if d and d.ci else None),
                        cell(d.p_value if d else None), d.n_pairs if d else "",
                        row.rank.position if row.rank else "", row.rank.tied_with_best if row.rank else "",
                    ]
                )  # fmt: skip


def write_seed_csv(comparisons: list[MetricComparison], path: Path) -> None:
    """``report_seeds.csv``: one row per group, metric and seed."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "metric", "seed", "value"])
        for comparison in comparisons:
            for row in comparison.rows:
                for seed, value in row.per_seed.items():
                    writer.writerow([row.label, comparison.metric, seed, repr(value)])


def _rich_table(rows: list[dict[str, str]], caption: str, title: str | None = None):  # noqa: ANN202
    from rich.table import Table

    table = Table(caption=caption, title=title, caption_justify="left")
    first = list(rows[0])[0]
    for column in rows[0]:
        table.add_column(column, justify="left" if column == first else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row.values())
    return table


def _console(rows: list[dict[str, str]]):  # noqa: ANN202
    from rich.console import Console

    # never wrap cells: the table is as wide as its content, whatever the terminal (or a log file) offers
    needed = sum(max(len(column), *(len(row[column]) for row in rows)) + 3 for column in rows[0]) + 1
    return Console(width=max(needed, Console().width))


def print_main_table(report: SweepReport, comparisons: list[MetricComparison]) -> None:
    """The main table (mean ± std per group and metric, ★ = best) on the terminal."""
    rows = main_rows(report, comparisons)
    console = _console(rows)
    console.print(f"[bold]Sweep[/bold] {report.sweep_dir}", soft_wrap=True)
    console.print(_rich_table(rows, f"mean ± sample std over seeds; n = finished seeds; {BEST_MARK} = best"))


def print_report(report: SweepReport, comparisons: list[MetricComparison], baseline: Baseline | None) -> None:
    """The main table, one comparison table per metric, then the sweep's progress lines."""
    print_main_table(report, comparisons)
    if baseline is not None:
        for comparison in comparisons:
            rows = comparison_rows(comparison)
            caption = "\n".join(notes(comparison, baseline, report.display_names))
            _console(rows).print(
                _rich_table(
                    rows,
                    caption,
                    f"{axis_label(comparison.metric)}: vs {baseline.describe(report.display_names)}",
                )
            )
    console = _console(main_rows(report, comparisons))
    for line in report.progress_lines():
        console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)
