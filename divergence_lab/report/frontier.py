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
is the largest divergence every curve of two or more points reaches, the smallest of their largest means:
``B = min_c max_i x̄_{c,i}``. Along a curve, ``y(B)`` is the linear interpolation between the first two
consecutive points (in increasing ``along``) whose means bracket ``B``::

    y(B) = ȳ_i + (B − x̄_i) · (ȳ_{i+1} − ȳ_i) / (x̄_{i+1} − x̄_i),   (x̄_i − B)(x̄_{i+1} − B) < 0,

or ``ȳ_i`` at a point with ``x̄_i = B``; "n/a" when no pair brackets ``B`` (the curve does not reach it).
The table notes a curve whose divergence is not monotone in ``along`` (it may cross ``B`` twice; the first
crossing is read).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import Group, SweepReport
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
from divergence_lab.report.metric_info import axis_label, bounds
from divergence_lab.report.statistics import Summary, summarise
from divergence_lab.report.tables import number

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
    """The groups sharing every varying key but ``along``, in increasing order of ``along``."""

    label: str
    points: list[FrontierPoint] = field(default_factory=list)

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


def run_values(report: SweepReport, group: Group, metric: str) -> list[float]:
    """The finite values of ``metric`` the group's runs recorded (a run metric or a top-level number)."""
    records = dict(report.records)
    values = []
    for job in group.jobs:
        record = records[job]
        value = record["metrics"].get(metric, record.get(metric))
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            values.append(float(value))
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
        curve = curves.setdefault(key, FrontierCurve(short_number(group.label(others, report.display_names))))
        point = FrontierPoint(values.get(spec.along), group)
        for metric in (spec.x, *spec.ys):
            if found := run_values(report, group, metric):
                point.summaries[metric] = summarise(found, bounds(metric))
        curve.points.append(point)
    for curve in curves.values():
        curve.points.sort(key=_along_order)
    return list(curves.values())


def common_budget(curves: Sequence[FrontierCurve], spec: FrontierSpec) -> float | None:
    """The table's budget: ``spec.budget``, else ``min_c max_i x̄_{c,i}`` over the curves of two or more
    points with a mean of x (None without such a curve)."""
    if spec.budget is not None:
        return spec.budget
    tops = [
        max(xs)
        for curve in curves
        if len(xs := [p.mean(spec.x) for p in curve.points if p.mean(spec.x) is not None]) >= 2
    ]
    return min(tops) if tops else None


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


# --- the table ----------------------------------------------------------------------------------------------


def _x_range(curve: FrontierCurve, x: str) -> str:
    xs = [m for p in curve.points if (m := p.mean(x)) is not None]
    if not xs:
        return "—"
    low, high = min(xs), max(xs)
    return number(low) if low == high else f"{number(low)} – {number(high)}"


def frontier_lines(report: SweepReport, spec: FrontierSpec | None) -> list[str]:
    """The report's Markdown section on the frontier: the budget, its rule and one row per curve (empty
    without ``report.frontier``)."""
    if spec is None:
        return []
    curves = frontier_curves(report, spec)
    budget = common_budget(curves, spec)
    rule = (
        "set by `report.frontier.budget`"
        if spec.budget is not None
        else "the largest value every curve of two or more points reaches (the smallest of their largest "
        "means)"
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
        return [*lines, f"No budget: no curve has two points with a mean of `{spec.x}`.", ""]
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
    return [*lines, ""]


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
