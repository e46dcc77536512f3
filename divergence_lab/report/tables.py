"""The report as text: ``report.md``, ``report.csv``, ``report_seeds.csv`` and the tables on the terminal.

Cells: ``mean ± std`` over seeds (``± n/a`` for one seed), ★ on the best mean of a metric whose better
direction is known; per metric a comparison table (95 % CI, the paired difference with its baseline group
and its CI, how many seeds it won, the test's p-value and the corrected one, the minimum detectable effect,
the verdict and the rank from paired tests; see :mod:`divergence_lab.report.statistics` and
:mod:`divergence_lab.report.verdicts`); the per-seed values; the provenance block; the sweep's progress.
No interval is printed where none can be computed (fewer than three seeds, or no spread).
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Callable
from pathlib import Path

from divergence_lab.report.collect import SweepReport
from divergence_lab.report.comparison import Baseline, GroupRow, MetricComparison
from divergence_lab.report.figure_style import short_number
from divergence_lab.report.metric_info import arrow, axis_label, bounds
from divergence_lab.report.provenance import Provenance
from divergence_lab.report.selection import selection_lines
from divergence_lab.report.statistics import CONFIDENCE, MAX_SEEDS_NEEDED, MIN_PAIRS_FOR_TEST, Summary

BEST_MARK = "★"
NO_BASELINE = {
    False: "A single group: nothing to compare.",
    True: "No baseline: the trials of a search each ran their own settings. Rerun the best ones over seeds "
    "(`best.yaml` holds the command) and compare those, or name one with `--baseline`.",
}
TEST_NAMES = {"t": "paired t", "wilcoxon": "Wilcoxon signed-rank", "bootstrap": "sign-flip permutation"}
CORRECTION_NAMES = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "uncorrected"}
SMALLEST_SHOWN_P = 1e-3  # smaller p-values print as "< 0.001"
P_DIGITS = 3  # significant digits of a p-value, more where fewer would round it onto the level
FIGURES = (
    (
        "report_forest.png",
        "Paired differences against the baseline",
        "Per metric: Δ = group − baseline per seed (dots), mean Δ with its CI (bar), the band of effects "
        "the study could not detect (± MDE, shaded); a filled diamond marks a difference significant after "
        "the correction.",
    ),
    (
        "report.png",
        "Final metrics",
        "Dots: mean over seeds with its 95 % CI (none below three seeds); small points: the seeds; dashed "
        "line: the baseline's mean.",
    ),
    ("report_lines.png", "Against the numeric sweep key", "Mean over seeds; error bars: ± std."),
    (
        "report_frontier.png",
        "At equal divergence from the reference",
        "Per metric of `report.frontier.y` against `report.frontier.x`: each group's mean over seeds at each "
        "value of `report.frontier.along` (the label beside it), joined in its increasing order; bars: the "
        "95 % Student-t CI of each mean in both directions (none below three seeds); a diamond: a group of "
        "one point. The table of the section at equal divergence reads the curves at one budget.",
    ),
    (
        "report_curves.png",
        "Per-epoch curves",
        "Training loss, the divergence term and the validation metrics per epoch (GCD: Old / New / All "
        "accuracy on D_u first); mean over seeds, band: ± std; dotted lines: the selected epochs; an "
        "inset zooms on the last epochs where the curves have flattened.",
    ),
    (
        "report_reliability.png",
        "Reliability diagrams",
        "Pooled over seeds (the pooled ECE is labelled so; the per-seed mean ± std, which the tables use, is "
        "printed beside it); per run: `<job>/reliability.png`.",
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


def interval(ci: tuple[float, float] | None, sign: bool = False, clipped: bool = False) -> str:
    """``[low, high]``; ``n/a`` without an interval; ``†`` where the metric's range cut it."""
    if ci is None:
        return "n/a"
    show = signed if sign else number
    return f"[{show(ci[0])}, {show(ci[1])}]" + ("†" if clipped else "")


def p_text(p: float, alpha: float) -> str:
    """``p`` with :data:`P_DIGITS` significant digits, more where the rounding would land on ``alpha`` or
    cross it (``0.05002`` prints as ``0.05002``, never ``0.05``)."""
    if p < SMALLEST_SHOWN_P:
        return f"< {SMALLEST_SHOWN_P:g}"
    for digits in range(P_DIGITS, 10):
        shown = f"{p:.{digits}g}"
        if (float(shown) < alpha) == (p < alpha) and (float(shown) != alpha or p == alpha):
            return shown
    return repr(p)


def p_value_cell(row: GroupRow, adjusted: bool, alpha: float) -> str:
    difference = row.difference
    if difference is None or row.is_baseline:
        return ""
    if not difference.tested:
        return "—"
    p = difference.p_adjusted if adjusted else difference.p_value
    return p_text(p, alpha) + (" *" if adjusted and p < alpha else "")


def difference_cell(row: GroupRow, has_baseline: bool = True) -> str:
    if not has_baseline:
        return ""
    if row.is_baseline:
        return "baseline"
    if row.counterpart_missing:
        return "no baseline run"
    if row.difference is None:
        return "no shared seed"
    d = row.difference
    shown = interval(d.ci, sign=True) if d.ci is not None else "(no CI)"
    return f"{signed(d.mean)} {shown} (n={d.n_pairs})"


def wins_cell(row: GroupRow, direction: int) -> str:
    """Seeds on which the group beat its baseline, of the paired seeds (higher Δ where no direction)."""
    d = row.difference
    if d is None:
        return ""
    wins = d.negative if direction < 0 else d.positive
    return f"{wins}/{d.n_pairs}"


def mde_cell(row: GroupRow) -> str:
    d = row.difference
    if d is None or d.mde is None:
        return ""
    return "∞" if d.mde == float("inf") else number(d.mde)


def main_rows(report: SweepReport, comparisons: list[MetricComparison]) -> list[dict[str, str]]:
    """One row per group: its label, finished seeds, and ``mean ± std`` per metric (★ = best mean)."""
    header = " / ".join(report.varying) or "group"
    rows = []
    for index, group in enumerate(report.groups):
        row = {header: short_number(report.label(group)), "n": str(len(group.seeds))}
        for comparison in comparisons:
            cell = comparison.rows[index]
            best = comparison.is_best(cell)
            row[f"{comparison.metric} {arrow(comparison.metric)}".strip()] = mean_std(cell.summary) + (
                f" {BEST_MARK}" if best else ""
            )
        rows.append(row)
    return rows


def comparison_rows(comparison: MetricComparison, has_baseline: bool = True) -> list[dict[str, str]]:
    """The comparison table of one metric, best first when the metric has a direction."""
    settings = comparison.settings
    rows = sorted(comparison.rows, key=lambda r: (r.stratum, r.rank.position if r.rank else 0))
    test = TEST_NAMES[settings.test]
    correction = CORRECTION_NAMES[settings.correction]
    table = []
    for row in rows:
        cells = {
            "group": short_number(row.label),
            "n": str(row.summary.n if row.summary else 0),
            "mean ± std": mean_std(row.summary),
            f"{CONFIDENCE:.0%} CI": interval(
                row.summary.ci if row.summary else None, clipped=bool(row.summary and row.summary.clipped)
            ),
        }
        if has_baseline:
            cells |= {
                "Δ vs baseline [95% CI]": difference_cell(row),
                "wins": wins_cell(row, comparison.direction),
                f"p ({test})": p_value_cell(row, adjusted=False, alpha=settings.alpha),
                f"p ({correction})": p_value_cell(row, adjusted=True, alpha=settings.alpha),
                "MDE": mde_cell(row),
                "verdict": "baseline" if row.is_baseline else (row.verdict.word if row.verdict else ""),
            }
        cells["rank"] = row.rank.describe() if row.rank else ""
        table.append(cells)
    return table


def notes(
    comparison: MetricComparison, baseline: Baseline | None, display_names: dict[str, str]
) -> list[str]:
    """What the reader must know about one metric's comparison: the test and its power, unmatched seeds,
    untested differences, clipped intervals, the seeds a declared effect needs."""
    settings = comparison.settings
    lines = []
    if baseline is not None and comparison.comparisons:
        alpha_eff = settings.per_comparison_alpha(comparison.comparisons)
        lines.append(
            f"{TEST_NAMES[settings.test]} test, {CORRECTION_NAMES[settings.correction]} over "
            f"{comparison.comparisons} comparison(s), * p < {settings.alpha:g} after correction; MDE: the "
            f"|Δ| a paired t-test detects with {settings.power:.0%} power at α = {alpha_eff:.3g}, from the "
            "observed SD of Δ."
        )
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
            f"Fewer than {MIN_PAIRS_FOR_TEST} paired seeds: no interval, no test, no claim; run more seeds."
        )
    if any(row.summary and row.summary.clipped for row in comparison.rows):
        low, high = bounds(comparison.metric) or (None, None)
        lines.append(f"† the interval was cut at the metric's range [{low:g}, {high:g}].")
    effect = settings.effect_of_interest
    needed = [
        (r, r.difference.seeds_needed or f"> {MAX_SEEDS_NEEDED:,}".replace(",", " "))
        for r in comparison.rows
        if r.difference and r.difference.tested
    ]
    if effect is not None and needed:
        pairs = max(r.difference.n_pairs for r in comparison.rows if r.difference)
        shown = ", ".join(f"{short_number(row.label)} {seeds}" for row, seeds in needed)
        lines.append(
            f"Effect of interest |Δ| = {number(effect)}: paired seeds that would detect it with "
            f"{settings.power:.0%} power, from each comparison's observed SD of Δ: {shown} "
            f"(this study: {pairs})."
        )
    ranked = [row.rank for row in comparison.rows if row.rank is not None]
    if comparison.rows and all(row.summary is None or row.summary.n < 2 for row in comparison.rows):
        lines.append("One seed per group: the order is not tested (no confidence intervals).")
    elif ranked and not all(rank.tested for rank in ranked):
        lines.append("Rank 1=: also where the paired test against the best group could not be made.")
    return lines


def markdown_table(rows: list[dict[str, str]]) -> list[str]:
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
        ("Set in some runs only", provenance.partial_lines()),
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


def verdict_parts(rows: list[GroupRow], direction: int, label: Callable[[GroupRow], str]) -> list[str]:
    """``better: a, b``, ``worse: …``, ``equivalent: …``, ``no difference detected: … (could detect ≥ …)``,
    ``not tested: …`` for the rows that have a verdict."""
    parts = []
    for kind in ("better", "worse", "equivalent"):
        title = "different" if direction == 0 and kind != "equivalent" else kind
        chosen = [label(row) for row in rows if row.verdict.kind == kind]
        if chosen:
            parts.append(f"{title}: {', '.join(chosen)}")
    undetected = [row for row in rows if row.verdict.kind == "undetected"]
    if undetected:
        mdes = [row.difference.mde for row in undetected if row.difference and row.difference.mde]
        span = sorted({number(min(mdes)), number(max(mdes))}) if mdes else []
        reach = f" (could detect ≥ {'–'.join(span)})" if span else ""
        parts.append(f"no difference detected: {', '.join(label(r) for r in undetected)}{reach}")
    untested = [label(row) for row in rows if row.verdict.kind == "untested"]
    if untested:
        parts.append(f"not tested: {', '.join(untested)}")
    return parts


def answer_lines(
    comparisons: list[MetricComparison],
    baseline: Baseline,
    names: dict[str, str],
    varying: list[str] | None = None,
) -> list[str]:
    """One line per metric: which groups the study found better, worse, equivalent, or could not tell from
    the baseline (with the smallest and largest effect it could have detected). Where other keys vary too
    (``varying``), one sub-line per combination of their values, naming the groups by the baseline's key."""
    lines = []
    for comparison in comparisons:
        rows = [row for row in comparison.rows if row.verdict is not None]
        if not rows:
            continue
        head = f"- **{axis_label(comparison.metric)}** vs {baseline.describe(names)}"
        others = [key for key in varying or [] if key != baseline.key]
        if not others:
            lines.append(f"{head}: " + "; ".join(verdict_parts(rows, comparison.direction, _row_label)))
            continue
        lines.append(f"{head}:")
        contexts: dict[str, list[GroupRow]] = {}
        for row in rows:
            values = dict(row.group.key)
            context = ", ".join(names.get(values.get(k, "—"), f"{k}={values.get(k, '—')}") for k in others)
            contexts.setdefault(context, []).append(row)

        def member(row: GroupRow) -> str:
            value = dict(row.group.key).get(baseline.key, "—")
            return short_number(names.get(value, value))

        for context, members in contexts.items():
            parts = verdict_parts(members, comparison.direction, member)
            lines.append(f"  - {short_number(context)}: " + "; ".join(parts))
    return lines


def _row_label(row: GroupRow) -> str:
    return short_number(row.label)


def model_selection_section(report: SweepReport, comparisons: list[MetricComparison]) -> list[str]:
    """The Markdown section on model selection and split sizes (:mod:`~divergence_lab.report.selection`);
    empty when no run recorded them."""
    means = {
        c.metric: statistics.fmean(v for g in report.groups for v in g.values.get(c.metric, []))
        for c in comparisons
        if any(g.values.get(c.metric) for g in report.groups)
    }
    selection = selection_lines(report.records, means)
    return ["## Model selection", "", *[f"- {line}" for line in selection], ""] if selection else []


def write_markdown(
    report: SweepReport,
    comparisons: list[MetricComparison],
    baseline: Baseline | None,
    provenance: Provenance,
    path: Path,
    extra_sections: list[str] | None = None,
    extra_answer: list[str] | None = None,
) -> None:
    """``report.md``: the answer, the main table, one comparison per metric, model selection, per-seed
    values, provenance, figures; ``extra_sections`` (Markdown lines) go before the per-seed values,
    ``extra_answer`` (list items) after the answer's own lines."""
    settings = comparisons[0].settings if comparisons else None
    lines = [f"# Sweep report: `{report.sweep_dir}`", ""]
    if len(report.sweeps) > 1:
        lines += ["Merged sweeps (fixed settings agree): " + ", ".join(f"`{s}`" for s in report.sweeps), ""]
    if baseline is not None and settings is not None:
        answer = answer_lines(comparisons, baseline, report.display_names, report.varying)
        lines += ["## Answer", "", *answer, *(extra_answer or []), ""]
    lines += [
        f"mean ± sample std over seeds (± n/a: one seed); n = finished seeds; {BEST_MARK} = best mean.",
        "",
        *markdown_table(main_rows(report, comparisons)),
        "",
        "## Which is better?",
        "",
        f"Baseline: **{baseline.describe(report.display_names)}**, paired by seed with the group that shares "
        "the other varying values. Δ = group − baseline; CI: 95 % "
        f"({'seeded BCa bootstrap' if settings.test == 'bootstrap' else 'Student t'}), none below "
        f"{MIN_PAIRS_FOR_TEST} seeds or without spread; wins: seeds on which the group beat the baseline; p: "
        f"two-sided {TEST_NAMES[settings.test]} test, then {CORRECTION_NAMES[settings.correction]}-corrected "
        f"over the metric's comparisons (* p < {settings.alpha:g}); MDE: minimum detectable effect; rank "
        "(among the groups that share the other varying values) "
        "1= : the paired test against the best group (corrected) does not separate them."
        if baseline and settings
        else NO_BASELINE[len(report.groups) > 1],
        "",
    ]
    for comparison in comparisons:
        lines += [
            f"### {axis_label(comparison.metric)}",
            "",
            *markdown_table(comparison_rows(comparison, baseline is not None)),
            "",
        ]
        lines += [f"- {note}" for note in notes(comparison, baseline, report.display_names)]
        lines += [""]
    lines += model_selection_section(report, comparisons)
    lines += extra_sections or []
    lines += ["## Per-seed values", ""]
    for comparison in comparisons:
        if any(row.per_seed for row in comparison.rows):
            lines += [f"### {comparison.metric}", "", *markdown_table(seed_rows(comparison)), ""]
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
             "diff_sd", "diff_ci_low", "diff_ci_high", "test", "p_value", "correction", "p_adjusted",
             "n_pairs", "wins", "mde", "seeds_needed", "tost_p_adjusted", "verdict", "rank", "tied_with_best"]
        )  # fmt: skip
        for comparison in comparisons:
            for row in comparison.rows:
                s, d = row.summary, row.difference
                writer.writerow(
                    [
                        row.label, comparison.metric, s.n if s else 0,
                        cell(s.mean if s else None), cell(s.std if s else None),
                        cell(s.ci[0] if s and s.ci else None), cell(s.ci[1] if s and s.ci else None),
                        row.is_baseline, cell(d.mean if d else None), cell(d.sd if d else None),
                        cell(d.ci[0] if d and d.ci else None), cell(d.ci[1] if d and d.ci else None),
                        comparison.settings.test, cell(d.p_value if d else None),
                        comparison.settings.correction, cell(d.p_adjusted if d else None),
                        d.n_pairs if d else "", wins_cell(row, comparison.direction),
                        cell(d.mde if d else None), d.seeds_needed if d and d.seeds_needed else "",
                        cell(d.tost_p_adjusted if d else None), row.verdict.word if row.verdict else "",
                        row.rank.position if row.rank else "", row.rank.tied_with_best if row.rank else "",
                    ]
                )  # fmt: skip


def write_seed_csv(report: SweepReport, comparisons: list[MetricComparison], path: Path) -> None:
    """``report_seeds.csv``: one row per group, metric and seed, with the run's selected epoch."""
    records = dict(report.records)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "metric", "seed", "value", "selected_epoch"])
        for comparison in comparisons:
            for row in comparison.rows:
                epochs = {
                    seed: records.get(job, {}).get("selected_epoch", "")
                    for seed, job in zip(row.group.seeds, row.group.jobs, strict=True)
                }
                for seed, value in row.per_seed.items():
                    writer.writerow([row.label, comparison.metric, seed, repr(value), epochs.get(seed, "")])


def _rich_table(rows: list[dict[str, str]], caption: str, title: str | None = None):  # noqa: ANN202
    """A rich table of ``rows``; every text is escaped, so ``[s]`` in a label stays text (not markup)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(caption=escape(caption), title=escape(title) if title else None, caption_justify="left")
    first = list(rows[0])[0]
    for column in rows[0]:
        table.add_column(escape(column), justify="left" if column == first else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(escape(value) for value in row.values()))
    return table


def _console(rows: list[dict[str, str]]):  # noqa: ANN202
    from rich.console import Console

    # never wrap cells: the table is as wide as its content, whatever the terminal (or a log file) offers
    needed = sum(max(len(column), *(len(row[column]) for row in rows)) + 3 for column in rows[0]) + 1
    return Console(width=max(needed, Console().width))


def print_main_table(report: SweepReport, comparisons: list[MetricComparison]) -> None:
    """The main table (mean ± std per group and metric, ★ = best) on the terminal."""
    from rich.markup import escape

    rows = main_rows(report, comparisons)
    console = _console(rows)
    console.print(f"[bold]Sweep[/bold] {escape(str(report.sweep_dir))}", soft_wrap=True)
    console.print(_rich_table(rows, f"mean ± sample std over seeds; n = finished seeds; {BEST_MARK} = best"))


def print_report(report: SweepReport, comparisons: list[MetricComparison], baseline: Baseline | None) -> None:
    """The main table, one comparison table per metric, then the sweep's progress lines."""
    print_main_table(report, comparisons)
    if baseline is not None:
        console = _console(main_rows(report, comparisons))
        for line in answer_lines(comparisons, baseline, report.display_names, report.varying):
            shown = line.replace("- ", "", 1).replace("**", "")
            console.print(shown, markup=False, highlight=False, soft_wrap=True)
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
