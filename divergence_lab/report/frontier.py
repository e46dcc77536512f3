"""``report_frontier.png`` and its table: the groups compared at equal divergence from the reference, not at
an equal setting of the swept strength (a KL-regularised RL sweep: reward against KL(policy ‖ reference)).

A study asks for it in its ``report`` section::

    frontier:
      x: test/kl_reverse_seq                   # the divergence from the reference (x axis)
      y: [test/reward, test/pass@16_exact]     # one panel per metric
      along: method.regulariser.beta           # the swept key whose values trace each curve
      budget: null                             # the common x of the table; null: the rule below

Curves. A curve gathers the groups that share every varying key but ``along`` (one curve per regulariser);
its points are those groups in increasing order of their ``along`` value. A point sits at the means over
the group's seeds, ``(x̄, ȳ) = (1/n Σ_s x_s, 1/n Σ_s y_s)``, with bars in both directions: the 95 %
Student-t interval of each mean, ``x̄ ± t_{0.975, n−1} · s_x / √n`` (as ``report.png``'s: none below three
seeds, cut at the metric's range). A curve of one point (a group without ``along``, or a single value of
it) is a diamond; the others are lines whose points' shapes say their ``along`` value (a legend entry per
value; text labels beside the points beyond ten values). A dotted vertical line marks the table's budget.

The table reads the curves at one common budget ``B`` of the divergence. Unless ``budget`` sets it, ``B``
is the geometric middle of the range that the most curves share, ``B = √(lo · hi)`` with
``lo = max_c min_i x̄_{c,i}`` and ``hi = min_c max_i x̄_{c,i}`` over the largest set of curves whose ranges
overlap (the middle on the logarithmic axis a divergence is drawn on, so that most seeds' own curves reach
it too); a curve outside that set reads "n/a". Along a curve, ``y(B)`` is the linear interpolation between
the first two consecutive points (in increasing ``along``) whose means bracket ``B``::

    y(B) = ȳ_i + (B − x̄_i) · (ȳ_{i+1} − ȳ_i) / (x̄_{i+1} − x̄_i),   (x̄_i − B)(x̄_{i+1} − B) < 0,

or ``ȳ_i`` at a point with ``x̄_i = B``; "n/a" when no pair brackets ``B`` (the curve does not reach it).
The table notes a curve whose divergence is not monotone in ``along`` (it may cross ``B`` twice; the first
crossing is read).

The test at the budget. With a baseline (``report.baseline``: one value of a varying key other than
``along``), a second table per metric tests each curve against its baseline curve: the curve with the
baseline's value of that key and the same values of the other keys. Every seed ``s`` has its own curve,
its runs' ``(x_{s,i}, y_{s,i})`` in increasing ``along``, read at the same ``B`` by the same rule:
``y_s(B)``, n/a where the seed's curve does not reach ``B`` (the seed is then left out). A curve's row
gives how many of its seeds reach ``B`` and ``mean ± std`` of their ``y_s(B)`` (the mean of the
interpolations, not the interpolation of the means of the first table). Against the baseline curve
``b_s(B)``, on the seeds that reach ``B`` on both, ``d_s = y_s(B) − b_s(B)`` goes through the report's own
paired statistics (:func:`~divergence_lab.report.statistics.paired_difference`: ``report.test``, its
95 % CI, the minimum detectable effect at ``report.power``), the p-values of one metric's comparisons
corrected together (``report.correction``) and the verdict in the report's words
(:func:`~divergence_lab.report.verdicts.verdict` at ``report.alpha``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.comparison import Baseline, GroupRow, MetricComparison
from divergence_lab.report.errors import ReportError
from divergence_lab.report.figure_style import (
    add_legend,
    axis_ranges,
    figure_layout,
    figure_style,
    grid_shape,
    hide_unused,
    palette,
    save,
    seeds_note,
    short_number,
)
from divergence_lab.report.lines import uses_log_scale
from divergence_lab.report.metric_info import axis_label, bounds, direction
from divergence_lab.report.statistics import (
    MIN_PAIRS_FOR_TEST,
    PairedDifference,
    Settings,
    Summary,
    correct,
    paired_difference,
    summarise,
)
from divergence_lab.report.tables import (
    CORRECTION_NAMES,
    TEST_NAMES,
    difference_cell,
    markdown_table,
    mde_cell,
    mean_std,
    number,
    p_value_cell,
    verdict_parts,
)
from divergence_lab.report.verdicts import verdict

FRONTIER_FILE = "report_frontier.png"
SECTION_KEY = "frontier"  # report.frontier
PANEL_COLUMNS = 2
PANEL_WIDTH_IN = 4.4
PANEL_HEIGHT_IN = 3.8
ALONG_MARKERS = ("o", "s", "^", "v", "P", "X", "*", "p", "h", "<")  # a shape per along value, increasing
ALONG_MARKER_DEFAULT = "o"  # more along values than shapes: every point a dot, labelled with its value
MARKER_KEY_COLOR = "0.35"  # the grey of the shapes' legend entries
BUDGET_LINE = {"color": "0.45", "linestyle": ":", "linewidth": 1.2, "zorder": 1}  # the table's budget
BUDGET_LABEL = "table's budget: {}"
LINE_MARKER_SIZE = 5.5
POINT_MARKER = "D"  # a curve of one point
POINT_MARKER_SIZE = 7
CAP_SIZE = 2.5
BAR_WIDTH = 0.9
BAR_ALPHA = 0.55  # the interval bars, lighter than the line
LABEL_FONT_PT = 8
LABEL_OFFSET_PT = (4, 4)  # the along label, up and right of its point
NOT_REACHED = "n/a"


@dataclass(frozen=True)
class FrontierSpec:
    """``report.frontier``: the divergence ``x``, the metrics ``ys`` (a panel each), the swept key
    ``along`` and the table's budget (None: the smallest of the curves' largest x)."""

    x: str
    ys: tuple[str, ...]
    along: str
    budget: float | None = None


@dataclass
class FrontierPoint:
    """One group on its curve: its ``along`` value (None: the group has none) and each metric's summary
    over its seeds (a metric none of its runs recorded is absent)."""

    along: str | None
    group: Group
    summaries: dict[str, Summary] = field(default_factory=dict)

    def mean(self, metric: str) -> float | None:
        summary = self.summaries.get(metric)
        return None if summary is None else summary.mean


@dataclass
class FrontierCurve:
    """The groups sharing every varying key but ``along`` (their values: ``key``), in increasing order of
    ``along``."""

    label: str
    points: list[FrontierPoint] = field(default_factory=list)
    key: tuple[tuple[str, str], ...] = ()

    def drawn(self, x: str, y: str) -> list[FrontierPoint]:
        """The points with a mean of both ``x`` and ``y``."""
        return [p for p in self.points if p.mean(x) is not None and p.mean(y) is not None]


# --- the study's settings -----------------------------------------------------------------------------------


def _metric_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ReportError(f"report.frontier.{where}: expected a non-empty name, got {value!r}")
    return value


def parse_spec(section: dict[str, Any]) -> FrontierSpec | None:
    """``report.frontier`` of a study's ``report`` section; None when it is absent or null.

    Raises :class:`ReportError` (one line) for a setting of the wrong kind."""
    value = section.get(SECTION_KEY)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ReportError(f"report.frontier: expected a mapping with x, y and along, got {value!r}")
    unknown = sorted(set(value) - {"x", "y", "along", "budget"})
    if unknown:
        raise ReportError(
            f"report.frontier: unknown key(s) {', '.join(map(str, unknown))} (x, y, along, budget)"
        )
    ys = value.get("y")
    ys = [ys] if isinstance(ys, str) else ys
    if not isinstance(ys, list) or not ys:
        raise ReportError(
            f"report.frontier.y: expected a metric or a list of metrics, got {value.get('y')!r}"
        )
    budget = value.get("budget")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int | float) or not math.isfinite(budget)
    ):
        raise ReportError(f"report.frontier.budget: expected a number or null, got {budget!r}")
    return FrontierSpec(
        _metric_name(value.get("x"), "x"),
        tuple(_metric_name(y, "y") for y in ys),
        _metric_name(value.get("along"), "along").lstrip("+~"),
        None if budget is None else float(budget),
    )


def check_spec(spec: FrontierSpec, report: SweepReport) -> None:
    """Refuse (:class:`ReportError`) metrics no run recorded, and an ``along`` key that is not swept or
    has a value that is not a number."""
    for where, metric in [("x", spec.x), *(("y", y) for y in spec.ys)]:
        if metric not in report.recorded:
            close = difflib.get_close_matches(metric, sorted(report.recorded), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ReportError(
                f"report.frontier.{where}: no run of {report.sweep_dir} recorded {metric!r}{hint}"
            )
    values = [dict(group.key)[spec.along] for group in report.groups if spec.along in dict(group.key)]
    if not values:
        swept = ", ".join(report.varying) or "none"
        raise ReportError(f"report.frontier.along: {spec.along!r} is not a swept key (swept: {swept})")
    for value in values:
        try:
            float(value)
        except ValueError:
            raise ReportError(f"report.frontier.along: {spec.along}={value!r} is not a number") from None


def frontier_spec(section: dict[str, Any], report: SweepReport) -> FrontierSpec | None:
    """:func:`parse_spec`, checked against the sweep (:func:`check_spec`)."""
    spec = parse_spec(section)
    if spec is not None:
        check_spec(spec, report)
    return spec


# --- the curves and the table's numbers ---------------------------------------------------------------------


def _finite(record: dict[str, Any], metric: str) -> float | None:
    """The run's ``metric`` (a run metric or a top-level number) when it is a finite number."""
    value = record["metrics"].get(metric, record.get(metric))
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def run_values(report: SweepReport, group: Group, metric: str) -> list[float]:
    """The finite values of ``metric`` the group's runs recorded (a run metric or a top-level number)."""
    records = dict(report.records)
    return [value for job in group.jobs if (value := _finite(records[job], metric)) is not None]


def seed_values(report: SweepReport, group: Group, metric: str) -> dict[int, float]:
    """``{seed: value}`` of ``metric`` over the group's runs with an integer seed (the first run of a
    repeated seed, as the report pairs them)."""
    records = dict(report.records)
    values: dict[int, float] = {}
    seen: set[int] = set()
    for seed, job in zip(group.seeds, group.jobs, strict=True):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed in seen:
            continue
        seen.add(seed)
        if (value := _finite(records[job], metric)) is not None:
            values[seed] = value
    return values


def _along_order(point: FrontierPoint) -> tuple[bool, float]:
    return point.along is not None, 0.0 if point.along is None else float(point.along)


def frontier_curves(report: SweepReport, spec: FrontierSpec) -> list[FrontierCurve]:
    """One curve per combination of the varying keys but ``along``, in the sweep's group order; its label
    is the group's label without ``along`` (display names applied)."""
    others = [key for key in report.varying if key != spec.along]
    curves: dict[tuple[tuple[str, str], ...], FrontierCurve] = {}
    for group in report.groups:
        values = dict(group.key)
        key = tuple((k, values[k]) for k in others if k in values)
        label = short_number(group.label(others, report.display_names))
        curve = curves.setdefault(key, FrontierCurve(label, key=key))
        point = FrontierPoint(values.get(spec.along), group)
        for metric in (spec.x, *spec.ys):
            if found := run_values(report, group, metric):
                point.summaries[metric] = summarise(found, bounds(metric))
        curve.points.append(point)
    for curve in curves.values():
        curve.points.sort(key=_along_order)
    return list(curves.values())


def common_budget(curves: Sequence[FrontierCurve], spec: FrontierSpec) -> float | None:
    """The table's budget: ``spec.budget``, else the geometric middle ``√(lo · hi)`` of the range that the
    most curves share: over the curves whose means of x take two or more distinct values (a group that
    ``along`` does not move, such as one without a regulariser, is a point, not a curve), the largest set
    of them whose ranges ``[min_i x̄_{c,i}, max_i x̄_{c,i}]`` overlap, with ``lo`` the largest of their
    smallest means and ``hi`` the smallest of their largest (the first such set in increasing x on a tie);
    None without a curve or for a non-positive ``lo``."""
    if spec.budget is not None:
        return spec.budget
    ranges = [
        (min(xs), max(xs))
        for curve in curves
        if len(set(xs := [p.mean(spec.x) for p in curve.points if p.mean(spec.x) is not None])) >= 2
    ]
    best: list[tuple[float, float]] = []
    for start in sorted({lo for lo, _ in ranges}):  # an overlap begins at some curve's smallest mean
        covering = [(lo, hi) for lo, hi in ranges if lo <= start <= hi]
        if len(covering) > len(best):
            best = covering
    if not best:
        return None
    low, high = max(lo for lo, _ in best), min(hi for _, hi in best)
    return math.sqrt(low * high) if low > 0 else None


def value_at(xs: Sequence[float], ys: Sequence[float], budget: float) -> float | None:
    """``y(B)`` by linear interpolation between the first consecutive pair (in the given order) whose xs
    bracket ``budget``, or the y of the first point at it; None when no pair brackets it."""
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if x == budget:
            return y
        if i + 1 < len(xs) and (x - budget) * (xs[i + 1] - budget) < 0:
            return y + (budget - x) * (ys[i + 1] - y) / (xs[i + 1] - x)
    return None


def is_monotone(values: Sequence[float]) -> bool:
    """Whether ``values`` never rise or never fall."""
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    return all(step >= 0 for step in steps) or all(step <= 0 for step in steps)


def curve_value_at(curve: FrontierCurve, spec: FrontierSpec, metric: str, budget: float) -> float | None:
    """``y(B)`` of ``metric`` along the curve (its points with means of both x and ``metric``)."""
    points = curve.drawn(spec.x, metric)
    return value_at([p.mean(spec.x) for p in points], [p.mean(metric) for p in points], budget)


# --- the test at the budget ---------------------------------------------------------------------------------


@dataclass
class BudgetTest:
    """One metric at the budget: ``comparison.rows`` has a row per curve, in curve order (its ``per_seed``:
    the seeds' ``y_s(B)`` that reach ``B``; its difference and verdict against the baseline curve);
    ``seeds`` the number of seeds each curve has (with x and the metric in some run)."""

    budget: float
    comparison: MetricComparison
    seeds: list[int]


def seeds_at(
    report: SweepReport, curve: FrontierCurve, spec: FrontierSpec, metric: str, budget: float
) -> dict[int, float | None]:
    """Each seed's ``y_s(B)`` along its own curve: its runs' ``(x, metric)`` in the curve's order of
    ``along``, read by :func:`value_at`; None where the seed's curve does not reach ``budget``. The seeds are
    those with x and ``metric`` in at least one of the curve's runs."""
    xs = [seed_values(report, point.group, spec.x) for point in curve.points]
    ys = [seed_values(report, point.group, metric) for point in curve.points]
    seeds = sorted({seed for x, y in zip(xs, ys, strict=True) for seed in set(x) & set(y)})
    at = {}
    for seed in seeds:
        points = [(x[seed], y[seed]) for x, y in zip(xs, ys, strict=True) if seed in x and seed in y]
        at[seed] = value_at([px for px, _ in points], [py for _, py in points], budget)
    return at


def baseline_curve(curve: FrontierCurve, curves: Sequence[FrontierCurve], baseline: Baseline) -> int | None:
    """The index of the curve with the baseline's value of its key and ``curve``'s values of the other
    keys (None: there is none)."""
    wanted = dict(curve.key) | {baseline.key: baseline.value}
    return next((i for i, c in enumerate(curves) if dict(c.key) == wanted), None)


def budget_tests(
    report: SweepReport, spec: FrontierSpec, baseline: Baseline, settings: dict[str, Settings]
) -> list[BudgetTest]:
    """Per metric of ``spec.ys``: every curve's seeds at the budget, paired by seed with its baseline
    curve's, tested with the metric's ``settings`` (default :class:`Settings`), the p-values of the
    metric's comparisons corrected together. Empty without a budget, or when the baseline is a value of
    ``along`` (then no curve is a baseline curve)."""
    curves = frontier_curves(report, spec)
    budget = common_budget(curves, spec)
    if budget is None or baseline.key == spec.along:
        return []
    counterparts = [baseline_curve(curve, curves, baseline) for curve in curves]
    is_baseline = [dict(curve.key).get(baseline.key) == baseline.value for curve in curves]
    tests = []
    for metric in spec.ys:
        metric_settings = settings.get(metric, Settings())
        at = [seeds_at(report, curve, spec, metric, budget) for curve in curves]
        reached = [{seed: value for seed, value in values.items() if value is not None} for values in at]
        pairs = [
            (reached[i], reached[counterpart])
            for i, counterpart in enumerate(counterparts)
            if counterpart is not None and not is_baseline[i]
        ]
        family = sum(1 for group, base in pairs if set(group) & set(base))
        found = iter(
            correct(
                [paired_difference(group, base, metric_settings, family) for group, base in pairs],
                metric_settings.correction,
            )
        )
        rows = []
        for i, curve in enumerate(curves):
            paired = counterparts[i] is not None and not is_baseline[i]
            difference: PairedDifference | None = next(found) if paired else None
            rows.append(
                GroupRow(
                    group=curve.points[0].group,  # a curve's row stands for all its groups; no cell reads it
                    label=curve.label,
                    summary=summarise(list(reached[i].values()), bounds(metric)) if reached[i] else None,
                    per_seed=reached[i],
                    is_baseline=is_baseline[i],
                    difference=difference,
                    counterpart_missing=not is_baseline[i] and counterparts[i] is None,
                    rank=None,
                    verdict=None
                    if difference is None
                    else verdict(difference, direction(metric), metric_settings, number),
                )
            )
        comparison = MetricComparison(metric, direction(metric), rows, metric_settings)
        tests.append(BudgetTest(budget, comparison, [len(values) for values in at]))
    return tests


def _budget_difference(row: GroupRow) -> str:
    """:func:`~divergence_lab.report.tables.difference_cell`, naming why a curve has no difference."""
    if row.difference is None and not row.is_baseline and not row.counterpart_missing:
        return "no seed reaches B on both"
    if row.counterpart_missing:
        return "no baseline curve"
    return difference_cell(row)


def budget_rows(test: BudgetTest) -> list[dict[str, str]]:
    """The test table of one metric at the budget: a row per curve."""
    settings = test.comparison.settings
    table = []
    for row, seeds in zip(test.comparison.rows, test.seeds, strict=True):
        table.append(
            {
                "group": row.label,
                "n seeds at B": f"{len(row.per_seed)}/{seeds}",
                "mean at B ± std": mean_std(row.summary),
                "Δ vs baseline [95% CI]": _budget_difference(row),
                f"p ({TEST_NAMES[settings.test]})": p_value_cell(row, adjusted=False, alpha=settings.alpha),
                f"p ({CORRECTION_NAMES[settings.correction]})": p_value_cell(
                    row, adjusted=True, alpha=settings.alpha
                ),
                "MDE": mde_cell(row),
                "verdict": "baseline" if row.is_baseline else (row.verdict.word if row.verdict else ""),
            }
        )
    return table


def budget_notes(test: BudgetTest) -> list[str]:
    """The test's settings and power, the seeds left out of a Δ, and too few paired seeds."""
    comparison = test.comparison
    settings = comparison.settings
    lines = []
    if comparison.comparisons:
        alpha_eff = settings.per_comparison_alpha(comparison.comparisons)
        lines.append(
            f"{TEST_NAMES[settings.test]} test on the seeds that reach B on both curves, "
            f"{CORRECTION_NAMES[settings.correction]} over {comparison.comparisons} comparison(s), "
            f"* p < {settings.alpha:g} after correction; MDE: the |Δ| a paired t-test detects with "
            f"{settings.power:.0%} power at α = {alpha_eff:.3g}, from the observed SD of Δ."
        )
    for row in comparison.rows:
        unpaired = row.difference.unpaired_seeds if row.difference else ()
        for seeds, where in (
            ([s for s in unpaired if s not in row.per_seed], "its baseline curve only"),
            ([s for s in unpaired if s in row.per_seed], "this curve only"),
        ):
            if seeds:
                shown = ", ".join(map(str, seeds))
                lines.append(f"{row.label}: seed(s) {shown} reach B on {where}, left out of Δ.")
    if any(row.difference and row.difference.n_pairs < MIN_PAIRS_FOR_TEST for row in comparison.rows):
        lines.append(
            f"Fewer than {MIN_PAIRS_FOR_TEST} seeds reach B on both curves: no interval, no test, no claim."
        )
    return lines


def budget_lines(
    report: SweepReport, spec: FrontierSpec, baseline: Baseline | None, settings: dict[str, Settings]
) -> list[str]:
    """The Markdown of the test at the budget: what is tested, then per metric its table and notes."""
    if baseline is None:
        return []
    shown = baseline.describe(report.display_names)
    if baseline.key == spec.along:
        return [f"The baseline ({shown}) is a value of `{spec.along}`: no curve to test at the budget.", ""]
    tests = budget_tests(report, spec, baseline, settings)
    if not tests:
        return []
    lines = [
        f"### Tested at `{spec.x}` = {number(tests[0].budget)}",
        "",
        "Per-seed interpolation for the test: each seed's own curve (its runs in increasing "
        f"`{spec.along}`) is read at the budget by the rule above; a seed whose curve does not reach it is "
        "left out (n seeds at B: those that reach it, of the curve's seeds; mean ± std over them). "
        f"Δ = curve − baseline curve (**{shown}**, the same values of the other keys), paired by seed.",
        "",
    ]
    for test in tests:
        metric = test.comparison.metric
        lines += [f"#### {axis_label(metric)}", "", *markdown_table(budget_rows(test)), ""]
        lines += [f"- {note}" for note in budget_notes(test)]
        lines += [""]
    return lines


def frontier_answer_lines(
    report: SweepReport, spec: FrontierSpec | None, baseline: Baseline | None, settings: dict[str, Settings]
) -> list[str]:
    """The report's answer at the budget: one line per metric of ``spec.ys`` (empty without
    ``report.frontier``, a baseline, or a budget)."""
    if spec is None or baseline is None:
        return []
    lines = []
    for test in budget_tests(report, spec, baseline, settings):
        rows = [row for row in test.comparison.rows if row.verdict is not None]
        if not rows:
            continue
        parts = verdict_parts(rows, test.comparison.direction, lambda row: row.label)
        lines.append(
            f"- **{axis_label(test.comparison.metric)}** at equal `{spec.x}` = {number(test.budget)} "
            f"(per-seed interpolation) vs {baseline.describe(report.display_names)}: " + "; ".join(parts)
        )
    return lines


# --- the table ----------------------------------------------------------------------------------------------


def _x_range(curve: FrontierCurve, x: str) -> str:
    xs = [m for p in curve.points if (m := p.mean(x)) is not None]
    if not xs:
        return "—"
    low, high = min(xs), max(xs)
    return number(low) if low == high else f"{number(low)} – {number(high)}"


def frontier_lines(
    report: SweepReport,
    spec: FrontierSpec | None,
    baseline: Baseline | None = None,
    settings: dict[str, Settings] | None = None,
) -> list[str]:
    """The report's Markdown section on the frontier: the budget, its rule and one row per curve, then,
    with a ``baseline``, the test at the budget (:func:`budget_lines`; ``settings``: how each metric is
    tested, default :class:`Settings`). Empty without ``report.frontier``."""
    if spec is None:
        return []
    curves = frontier_curves(report, spec)
    budget = common_budget(curves, spec)
    rule = (
        "set by `report.frontier.budget`"
        if spec.budget is not None
        else "the geometric middle √(lo · hi) of the range that the most curves share (lo: the largest of "
        "their smallest means, hi: the smallest of their largest)"
    )
    lines = [
        f"## At equal `{spec.x}`",
        "",
        f"Each group's curve joins its means over seeds in increasing order of `{spec.along}` "
        f"(`{FRONTIER_FILE}`); its y at the budget is the linear interpolation between the first two "
        f"consecutive points whose `{spec.x}` means bracket the budget; {NOT_REACHED}: the curve does not "
        "reach it.",
        "",
    ]
    if budget is None:
        return [
            *lines,
            f"No budget: no group's means of `{spec.x}` take two or more values.",
            "",
        ]
    lines += [f"Budget: `{spec.x}` = {number(budget)}, {rule}.", ""]
    header = ["group", "points", f"{spec.x} (min – max)", *(f"{y} at {number(budget)}" for y in spec.ys)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for curve in curves:
        cells = [curve.label, str(len(curve.points)), _x_range(curve, spec.x)]
        for metric in spec.ys:
            value = curve_value_at(curve, spec, metric, budget)
            cells.append(NOT_REACHED if value is None else number(value))
        lines.append("| " + " | ".join(cells) + " |")
    bent = [
        c.label for c in curves if not is_monotone([m for p in c.points if (m := p.mean(spec.x)) is not None])
    ]
    if bent:
        lines += ["", f"`{spec.x}` is not monotone in `{spec.along}` along: {', '.join(bent)} "
                  "(the first crossing of the budget is read)."]  # fmt: skip
    return [*lines, "", *budget_lines(report, spec, baseline, settings or {})]


# --- the figure ---------------------------------------------------------------------------------------------


def _bars(summary: Summary) -> tuple[list[float], list[float]]:
    """The lower and upper bar lengths of a mean (none without a CI)."""
    if summary.ci is None:
        return [0.0], [0.0]
    return [summary.mean - summary.ci[0]], [summary.ci[1] - summary.mean]


def _interval(summary: Summary) -> tuple[float, float]:
    return summary.ci if summary.ci is not None else (summary.mean, summary.mean)


def along_markers(curves: Sequence[FrontierCurve]) -> dict[str, str] | None:
    """A marker shape per ``along`` value of the curves of two or more points, in increasing order; None
    when there are more values than :data:`ALONG_MARKERS` (the points are then labelled with text)."""
    values = {p.along for c in curves if len(c.points) > 1 for p in c.points if p.along is not None}
    ordered = sorted(values, key=float)
    if len(ordered) > len(ALONG_MARKERS):
        return None
    return dict(zip(ordered, ALONG_MARKERS, strict=False))


def along_name(along: str) -> str:
    """The legend's short name of the ``along`` key: its last dotted part (``method.regulariser.beta`` →
    ``beta``); the figure's title names it in full."""
    return along.rsplit(".", 1)[-1]


def _draw_curve(
    ax: Any, curve: FrontierCurve, spec: FrontierSpec, metric: str, color: Any, markers: dict[str, str] | None
) -> None:
    """The curve's line (label: the curve's), its points with their bars, each point's marker shape (or
    text label) saying its ``along`` value; a curve of one point is a diamond."""
    points = curve.drawn(spec.x, metric)
    if not points:
        return
    xs = [p.summaries[spec.x] for p in points]
    ys = [p.summaries[metric] for p in points]
    single = len(curve.points) == 1
    ax.plot(
        [s.mean for s in xs], [s.mean for s in ys], color=color, label=curve.label,
        marker=POINT_MARKER if single else "", linestyle="none" if single else "-",
        markersize=POINT_MARKER_SIZE, zorder=3,
    )  # fmt: skip
    for point, sx, sy in zip(points, xs, ys, strict=True):
        x_low, x_high = _bars(sx)
        y_low, y_high = _bars(sy)
        ax.errorbar(
            [sx.mean], [sy.mean], xerr=[x_low, x_high], yerr=[y_low, y_high], fmt="none", ecolor=color,
            elinewidth=BAR_WIDTH, capsize=CAP_SIZE, alpha=BAR_ALPHA, zorder=2,
        )  # fmt: skip
        if single or point.along is None:
            continue
        if markers is None:
            ax.annotate(
                short_number(point.along), (sx.mean, sy.mean), xytext=LABEL_OFFSET_PT,
                textcoords="offset points", fontsize=LABEL_FONT_PT, color=color,
            )  # fmt: skip
        ax.plot(
            [sx.mean], [sy.mean], color=color, marker=ALONG_MARKER_DEFAULT if markers is None
            else markers[point.along], markersize=LINE_MARKER_SIZE, linestyle="none", zorder=4,
        )  # fmt: skip


def _marker_handles(spec: FrontierSpec, markers: dict[str, str] | None) -> list[Any]:
    """The legend entries of the ``along`` values' marker shapes (grey, after the curves')."""
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], color=MARKER_KEY_COLOR, marker=marker, linestyle="none", markersize=LINE_MARKER_SIZE,
               label=f"{along_name(spec.along)} = {short_number(value)}")
        for value, marker in (markers or {}).items()
    ]  # fmt: skip


def write_frontier(report: SweepReport, spec: FrontierSpec | None, path: Path) -> bool:
    """Draw one panel per ``spec.ys`` metric against ``spec.x``; False (nothing written) without
    ``report.frontier`` or without a group that recorded x and some y."""
    if spec is None:
        return False
    curves = frontier_curves(report, spec)
    if not any(curve.drawn(spec.x, y) for curve in curves for y in spec.ys):
        return False
    intervals = {
        y: [_interval(p.summaries[y]) for curve in curves for p in curve.drawn(spec.x, y)] for y in spec.ys
    }
    ranges = axis_ranges(intervals)
    x_means = [p.summaries[spec.x].mean for curve in curves for p in curve.points if spec.x in p.summaries]
    markers = along_markers(curves)
    marker_handles = _marker_handles(spec, markers)
    budget = common_budget(curves, spec)
    budget_label = BUDGET_LABEL.format(number(budget)) if budget is not None else ""
    rows, columns = grid_shape(len(spec.ys), PANEL_COLUMNS)
    entries = [c.label for c in curves] + [h.get_label() for h in marker_handles] + [budget_label]
    size = figure_layout(columns, PANEL_WIDTH_IN, rows * PANEL_HEIGHT_IN, entries)
    with figure_style() as plt:
        fig, axes = plt.subplots(rows, columns, figsize=size.size, squeeze=False, layout="constrained")
        for ax, metric in zip(axes.flat, spec.ys, strict=False):
            for curve, color in zip(curves, palette(len(curves)), strict=True):
                _draw_curve(ax, curve, spec, metric, color, markers)
            if budget is not None:
                ax.axvline(budget, **BUDGET_LINE, label=budget_label)
            if uses_log_scale(x_means):
                ax.set_xscale("log")
            ax.set(xlabel=axis_label(spec.x), ylabel=axis_label(metric))
            if ranges.get(metric):
                ax.set_ylim(*ranges[metric])
        hide_unused(axes, len(spec.ys))
        handles = {
            label: handle
            for ax in axes.flat
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)
        }
        shown = [handles[label] for label in [c.label for c in curves] + [budget_label] if label in handles]
        add_legend(fig, shown + marker_handles, size)
        fig.suptitle(
            f"Against {spec.x}: mean over seeds, bars: 95 % CI ({seeds_note(report.groups)}); "
            f"each curve in increasing {spec.along}"
        )
        save(fig, path)
    return True
