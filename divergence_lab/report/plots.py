"""``report.png``: one panel per reported metric: each group's mean over seeds (a dot) with its 95 % CI
(none below three seeds), its seeds (small points beside it), the baseline's mean (a dashed line, where
one baseline group exists) and ``*`` over a group whose difference with its baseline is significant after
the correction. Dots, not bars: a bar's length reads as the value from zero, which a cropped accuracy axis
would misstate.

How the groups are laid out (:func:`bar_layout`):

* ``grouped``: several keys vary and the groups fill at least 3/4 of their grid, with at most 12 values of
  the last varying key and at most 10 combinations of the others: the x axis holds the values of the last
  varying key (``key=value``), the other keys' values are side-by-side coloured bars (legend on the right);
* ``bars``: otherwise, up to 12 groups: one bar per group, its label wrapped under it;
* ``ranked``: more than 12 groups, or labels longer than two wrapped lines (an Optuna study, one group per
  trial): horizontal bars, one row per group, best first by the first reported metric, at most 25 rows
  (the figure's title says so).

Each panel's value axis is labelled with the metric and its better direction, and ranged as
:mod:`~divergence_lab.report.figure_style` documents over every drawn value, seeds included (accuracies
share a range; other metrics start at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.comparison import GroupRow, MetricComparison
from divergence_lab.report.figure_style import (
    LABEL_WIDTH,
    MAX_RANKED,
    MAX_WIDTH_IN,
    add_legend,
    axis_ranges,
    figure_layout,
    figure_style,
    grid_shape,
    group_label,
    hide_unused,
    legend_width,
    palette,
    save,
    seeds_note,
    sort_by_metric,
    text_width,
    value_label,
    wrap_label,
)
from divergence_lab.report.metric_info import axis_label

MAX_VERTICAL_GROUPS = 12
MAX_VERTICAL_LABEL = 2 * LABEL_WIDTH  # longer labels (several keys of a search) cannot stand under a bar
MAX_CATEGORIES = 12
MAX_HUES = 10
GRID_FILL = 0.75  # a grid of keys is drawn as grouped bars when at least this share of its cells is run
PANEL_COLUMNS = 3
BAR_SPAN = 0.8  # of a category's width, the part its bars take
BAR_SLOT_IN = 0.2  # inches per bar
PANEL_MARGIN_IN = 1.0  # inches of a vertical panel beside its bars (value axis, padding)
MIN_PANEL_WIDTH_IN = 3.2
PANEL_HEIGHT_IN = 3.0
TICK_LINE_IN = 0.17  # inches per line of a tick label
RANKED_ROW_IN = 0.24  # inches per group of a ranked panel
RANKED_MARGIN_IN = 1.0
ROTATION = 30
SEED_SPREAD = 0.25  # of a dot's slot, the horizontal spread of its seeds' points
SEED_COLOR = "0.55"


@dataclass
class BarLayout:
    """Where each group's bar goes: ``cells[(category, hue)]``, categories along one axis, hues as colours."""

    kind: str  # "grouped", "bars" or "ranked" (see the module docstring)
    categories: list[str]  # labels along the category axis: key=value (grouped) or group labels
    hues: list[str] = field(default_factory=lambda: [""])  # legend entries (grouped), else one empty hue
    cells: dict[tuple[int, int], Group] = field(default_factory=dict)
    axis_name: str = ""  # what the category axis holds (the swept key), empty when the labels say it
    note: str = ""  # what the figure's title adds (ranking, groups left out)


def bar_layout(report: SweepReport) -> BarLayout:
    """The layout of ``report.png`` for this sweep (see the module docstring)."""
    if len(report.varying) >= 2 and (grid := _grid_layout(report)) is not None:
        return grid
    labels = [group_label(report, group) for group in report.groups]
    fits = all(len(label) <= MAX_VERTICAL_LABEL for label in labels)
    if len(report.groups) <= MAX_VERTICAL_GROUPS and fits:
        axis_name = report.varying[0] if len(report.varying) == 1 else ""
        return BarLayout("bars", labels, cells=_one_hue(report.groups), axis_name=axis_name)
    metric = report.metrics[0]
    shown = sort_by_metric(report.groups, metric)[:MAX_RANKED]
    note = f"sorted by {metric}, best first"
    if len(shown) < len(report.groups):
        note += f"; best {len(shown)} of {len(report.groups)} groups"
    labels = [group_label(report, group) for group in shown]
    return BarLayout("ranked", labels, cells=_one_hue(shown), note=note)


def _one_hue(groups: list[Group]) -> dict[tuple[int, int], Group]:
    return {(index, 0): group for index, group in enumerate(groups)}


def _grid_layout(report: SweepReport) -> BarLayout | None:
    """Grouped bars (x = the last varying key), or None when the groups do not fill a small enough grid."""
    x_key, hue_keys = report.varying[-1], report.varying[:-1]
    categories: list[str] = []
    hues: list[str] = []
    cells: dict[tuple[int, int], Group] = {}
    for group in report.groups:
        values = dict(group.key)
        if any(key not in values for key in report.varying):
            return None
        category = value_label(report, x_key, values[x_key])
        hue = ", ".join(value_label(report, key, values[key]) for key in hue_keys)
        categories += [category] if category not in categories else []
        hues += [hue] if hue not in hues else []
        cell = (categories.index(category), hues.index(hue))
        if cell in cells:
            return None
        cells[cell] = group
    slots = len(categories) * len(hues)
    if len(categories) > MAX_CATEGORIES or len(hues) > MAX_HUES or len(cells) < GRID_FILL * slots:
        return None
    return BarLayout("grouped", categories, hues, cells)  # the ticks name the key: key=value


Rows = dict[tuple[str, int], GroupRow]  # (metric, id(group)) -> the group's row of that metric


def _rows_by_group(comparisons: list[MetricComparison]) -> Rows:
    return {(c.metric, id(row.group)): row for c in comparisons for row in c.rows}


def _drawn_intervals(
    groups: list[Group], rows: Rows, metrics: list[str]
) -> dict[str, list[tuple[float, float]]]:
    """Each metric's ``(lowest, highest)`` drawn value per group: its CI and its seeds."""
    intervals: dict[str, list[tuple[float, float]]] = {}
    for metric in metrics:
        spans = []
        for group in groups:
            row = rows.get((metric, id(group)))
            if row is None or row.summary is None:
                continue
            values = [*row.per_seed.values(), row.summary.mean, *(row.summary.ci or ())]
            spans.append((min(values), max(values)))
        intervals[metric] = spans
    return intervals


def write_plot(report: SweepReport, comparisons: list[MetricComparison], path: Path) -> None:
    """Draw ``report.png``: a dot with its CI and seed points per group and metric."""
    layout = bar_layout(report)
    shown = list(layout.cells.values())
    rows = _rows_by_group(comparisons)
    ranges = axis_ranges(_drawn_intervals(shown, rows, report.metrics))
    with figure_style() as plt:
        draw = _draw_ranked if layout.kind == "ranked" else _draw_vertical
        fig = draw(plt, report, layout, ranges, rows)
        details = "; ".join(part for part in (seeds_note(shown), layout.note) if part)
        fig.suptitle(
            f"{report.sweep_dir.parent.name}/{report.sweep_dir.name}: mean with 95 % CI, seeds as points "
            f"({details})"
        )
        save(fig, path)


@dataclass
class Point:
    """One group's drawn values of one metric."""

    position: float
    mean: float
    ci: tuple[float, float] | None
    seeds: list[float]
    significant: bool


def _points(layout: BarLayout, metric: str, hue: int, rows: Rows, offset: Any) -> list[Point]:
    """The groups of one hue that recorded ``metric``, at their positions (``offset(category)``)."""
    points = []
    for category in range(len(layout.categories)):
        group = layout.cells.get((category, hue))
        row = rows.get((metric, id(group))) if group else None
        if row is None or row.summary is None:
            continue
        significant = row.verdict is not None and row.verdict.significant
        points.append(
            Point(
                offset(category), row.summary.mean, row.summary.ci, list(row.per_seed.values()), significant
            )
        )
    return points


def _draw_points(ax: Any, points: list[Point], color: Any, slot: float, vertical: bool) -> None:
    """Seeds as small points, the mean as a dot with its CI, ``*`` beside a significant difference."""
    import numpy as np

    for point in points:
        spread = np.linspace(-1, 1, len(point.seeds)) * SEED_SPREAD * slot if len(point.seeds) > 1 else [0.0]
        where = [point.position + slot * 0.3 + s for s in spread]
        errors = None if point.ci is None else [[point.mean - point.ci[0]], [point.ci[1] - point.mean]]
        if vertical:
            ax.scatter(where, point.seeds, s=9, color=SEED_COLOR, zorder=2, linewidths=0)
            ax.errorbar(point.position, point.mean, yerr=errors, fmt="o", color=color, capsize=3, zorder=3)
        else:
            ax.scatter(point.seeds, where, s=9, color=SEED_COLOR, zorder=2, linewidths=0)
            ax.errorbar(point.mean, point.position, xerr=errors, fmt="o", color=color, capsize=2, zorder=3)
        if point.significant:
            top = point.ci[1] if point.ci else point.mean
            xy = (point.position, top) if vertical else (top, point.position)
            ax.annotate("*", xy, xytext=(0, 2) if vertical else (4, -4), textcoords="offset points",
                        ha="center" if vertical else "left", fontsize=12, color=color)  # fmt: skip


def _baseline_mean(rows: Rows, metric: str, groups: list[Group]) -> float | None:
    """The baseline's mean where exactly one baseline group recorded ``metric``."""
    means = [
        row.summary.mean
        for group in groups
        if (row := rows.get((metric, id(group)))) is not None and row.is_baseline and row.summary
    ]
    return means[0] if len(means) == 1 else None


def _note_missing(ax: Any, metric: str, drawn: bool) -> None:
    if not drawn:
        ax.text(0.5, 0.5, f"no run recorded\n{metric}", transform=ax.transAxes, ha="center", va="center")


def _draw_vertical(plt: Any, report: SweepReport, layout: BarLayout, ranges: dict, rows: Rows) -> Any:
    """Dots: one panel per metric, categories along x, hues side by side."""
    from matplotlib.lines import Line2D

    metrics = report.metrics
    legend = len(layout.hues) > 1
    slots = len(layout.categories) * len(layout.hues)
    panel_width = max(MIN_PANEL_WIDTH_IN, BAR_SLOT_IN * slots + PANEL_MARGIN_IN)
    entries = layout.hues if legend else []
    room = MAX_WIDTH_IN - (legend_width(entries) if legend else 0.0)
    grid_rows, columns = grid_shape(len(metrics), max(1, min(PANEL_COLUMNS, int(room // panel_width))))
    ticks = [wrap_label(label) for label in layout.categories]
    lines = max(tick.count("\n") + 1 for tick in ticks)
    widest = max(text_width(tick) for tick in ticks)
    rotate = widest > (panel_width - PANEL_MARGIN_IN) / len(layout.categories)
    tick_height = TICK_LINE_IN * lines + (widest * math.sin(math.radians(ROTATION)) if rotate else 0.0)
    size = figure_layout(columns, panel_width, grid_rows * (PANEL_HEIGHT_IN + tick_height), entries)
    fig, axes = plt.subplots(grid_rows, columns, figsize=size.size, squeeze=False, layout="constrained")
    colors = palette(len(layout.hues) if legend else len(layout.categories))
    slot = BAR_SPAN / len(layout.hues)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        drawn = False
        for hue in range(len(layout.hues)):
            points = _points(layout, metric, hue, rows, lambda c, h=hue: c - BAR_SPAN / 2 + slot * (h + 0.5))
            for point in points:
                color = colors[hue] if legend else colors[round(point.position)]
                _draw_points(ax, [point], color, slot, vertical=True)
            drawn = drawn or bool(points)
        baseline = _baseline_mean(rows, metric, list(layout.cells.values()))
        if baseline is not None:
            ax.axhline(baseline, color="0.3", linestyle="--", linewidth=1, zorder=1)
        ax.set_xticks(
            range(len(layout.categories)),
            ticks,
            rotation=ROTATION if rotate else 0,
            ha="right" if rotate else "center",
            rotation_mode="anchor" if rotate else "default",
        )
        ax.set_xlim(-0.5, len(layout.categories) - 0.5)
        ax.set(ylabel=axis_label(metric), xlabel=layout.axis_name)
        ax.grid(axis="x", visible=False)
        if ranges.get(metric):
            ax.set_ylim(*ranges[metric])
        _note_missing(ax, metric, drawn)
    hide_unused(axes, len(metrics))
    if legend:
        handles = [
            Line2D([], [], marker="o", linestyle="", color=colors[h], label=hue)
            for h, hue in enumerate(layout.hues)
        ]
        add_legend(fig, handles, size)
    return fig


def _draw_ranked(plt: Any, report: SweepReport, layout: BarLayout, ranges: dict, rows: Rows) -> Any:
    """Horizontal dots: one row per group (best on top), one panel per metric; labels left of the first."""
    metrics = report.metrics
    grid_rows, columns = grid_shape(len(metrics), PANEL_COLUMNS)
    panels_height = grid_rows * (RANKED_ROW_IN * len(layout.categories) + RANKED_MARGIN_IN)
    size = figure_layout(columns, MAX_WIDTH_IN / columns, panels_height, [])  # labels take the room they need
    fig, axes = plt.subplots(
        grid_rows, columns, figsize=size.size, squeeze=False, sharey=True, layout="constrained"
    )
    (color,) = palette(1)
    for index, (ax, metric) in enumerate(zip(axes.flat, metrics, strict=False)):
        points = _points(layout, metric, 0, rows, float)
        _draw_points(ax, points, color, BAR_SPAN, vertical=False)
        baseline = _baseline_mean(rows, metric, list(layout.cells.values()))
        if baseline is not None:
            ax.axvline(baseline, color="0.3", linestyle="--", linewidth=1, zorder=1)
        ax.set_xlabel(axis_label(metric))
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", labelleft=index % columns == 0, length=0)
        if ranges.get(metric):
            ax.set_xlim(*ranges[metric])
        _note_missing(ax, metric, bool(points))
    first = axes.flat[0]
    first.set_yticks(range(len(layout.categories)), layout.categories)
    first.set_ylim(len(layout.categories) - 0.5, -0.5)  # best on top
    hide_unused(axes, len(metrics))
    return fig
