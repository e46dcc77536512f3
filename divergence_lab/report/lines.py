"""``report_lines.png``: each reported metric against a numeric sweep key (density, label noise,
temperature ...), one line per combination of the other varying keys, error bars = std over seeds.

The x axis is logarithmic when the swept values are positive and span a factor of 10 or more; its ticks
are the swept values themselves, written plainly (``0.005``, ``0.01``, ``0.1``), without minor tick labels.
A sweep whose lines would hold a single point each on average (an Optuna study, where every trial draws
new values) gets no line plot. Value axes are ranged as :mod:`~divergence_lab.report.figure_style`
documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.figure_style import (
    add_legend,
    axis_ranges,
    figure_layout,
    figure_style,
    grid_shape,
    group_intervals,
    hide_unused,
    palette,
    save,
    seeds_note,
    short_number,
    value_label,
)
from divergence_lab.report.metric_info import axis_label

LOG_SPAN = 10  # positive values spanning this factor or more get a logarithmic axis
MIN_POINTS_PER_LINE = 2  # on average, or the sweep gets no line plot
MAX_X_TICKS = 10
PANEL_COLUMNS = 3
PANEL_WIDTH_IN = 3.6
PANEL_HEIGHT_IN = 3.2


def numeric_key(varying: list[str], groups: list[Group]) -> str | None:
    """The last varying key whose values are all numbers (None when there is none)."""
    for key in reversed(varying):
        try:
            [float(dict(group.key)[key]) for group in groups if key in dict(group.key)]
        except ValueError:
            continue
        return key
    return None


@dataclass
class LineSeries:
    """One line: the groups sharing the other varying keys' values, in increasing order of the x key."""

    label: str
    xs: list[float] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)


def line_series(report: SweepReport, x_key: str) -> list[LineSeries]:
    """The lines against ``x_key``: one per combination of the other varying keys (display names applied)."""
    series: dict[str, LineSeries] = {}
    for group in report.groups:
        values = dict(group.key)
        if x_key not in values:
            continue
        others = [
            value_label(report, key, values[key]) for key in report.varying if key != x_key and key in values
        ]
        line = series.setdefault(", ".join(others) or "all runs", LineSeries(", ".join(others) or "all runs"))
        line.xs.append(float(values[x_key]))
        line.groups.append(group)
    for line in series.values():
        order = sorted(range(len(line.xs)), key=line.xs.__getitem__)
        line.xs, line.groups = [line.xs[i] for i in order], [line.groups[i] for i in order]
    return list(series.values())


def x_ticks(xs: list[float]) -> list[float]:
    """The swept values to mark on the x axis: all of them, thinned evenly beyond :data:`MAX_X_TICKS`."""
    values = sorted(set(xs))
    step = math.ceil(len(values) / MAX_X_TICKS)
    return values[::step]


def uses_log_scale(xs: list[float]) -> bool:
    """Positive values spanning a factor of :data:`LOG_SPAN` or more."""
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) >= LOG_SPAN


def write_line_plot(report: SweepReport, path: Path) -> str | None:
    """Draw one panel per metric against the numeric varying key; return that key, or None (no plot)."""
    x_key = numeric_key(report.varying, report.groups)
    if x_key is None:
        return None
    series = line_series(report, x_key)
    if sum(len(line.xs) for line in series) < MIN_POINTS_PER_LINE * len(series):
        return None
    xs = [x for line in series for x in line.xs]
    ranges = axis_ranges(group_intervals(report.groups, report.metrics))
    legend = len(series) > 1
    rows, columns = grid_shape(len(report.metrics), PANEL_COLUMNS)
    entries = [line.label for line in series] if legend else []
    size = figure_layout(columns, PANEL_WIDTH_IN, rows * PANEL_HEIGHT_IN, entries)
    with figure_style() as plt:
        fig, axes = plt.subplots(rows, columns, figsize=size.size, squeeze=False, layout="constrained")
        colors = palette(len(series))
        for ax, metric in zip(axes.flat, report.metrics, strict=False):
            for line, color in zip(series, colors, strict=True):
                stats = [group.summary(metric) for group in line.groups]
                ax.errorbar(
                    line.xs, [m for m, _ in stats], yerr=[s for _, s in stats],
                    marker="o", markersize=4, capsize=3, color=color, label=line.label,
                )  # fmt: skip
            _format_x_axis(ax, xs)
            ax.set(xlabel=x_key, ylabel=axis_label(metric))
            if ranges.get(metric):
                ax.set_ylim(*ranges[metric])
        hide_unused(axes, len(report.metrics))
        if legend:
            add_legend(fig, axes.flat[0].get_legend_handles_labels()[0], size)
        fig.suptitle(f"Against {x_key}: mean ± std over seeds ({seeds_note(report.groups)})")
        save(fig, path)
    return x_key


def _format_x_axis(ax: Any, xs: list[float]) -> None:
    """Major ticks at the swept values, written plainly; no minor tick labels (log axes have many)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    if uses_log_scale(xs):
        ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(x_ticks(xs)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: short_number(f"{value:g}")))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
