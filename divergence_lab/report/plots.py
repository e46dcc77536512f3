"""``report.png``: one bar chart per reported metric, mean ± std over seeds (the error bars).

How the groups are laid out (:func:`bar_layout`):

* ``grouped``: several keys vary and the groups fill at least 3/4 of their grid, with at most 12 values of
  the last varying key and at most 10 combinations of the others: the x axis holds the values of the last
  varying key (``key=value``), the other keys' values are side-by-side coloured bars (legend on the right);
* ``bars``: otherwise, up to 12 groups: one bar per group, its label wrapped under it;
* ``ranked``: more than 12 groups, or labels longer than two wrapped lines (an Optuna study, one group per
  trial): horizontal bars, one row per group, best first by the first reported metric, at most 25 rows
  (the figure's title says so).

Each panel's value axis is labelled with the metric and its better direction, and ranged as
:mod:`~divergence_lab.report.figure_style` documents (accuracies share a range; other metrics start at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.figure_style import (
    LABEL_WIDTH,
    MAX_RANKED,
    MAX_WIDTH_IN,
    add_legend,
    axis_ranges,
    figure_layout,
    figure_style,
    grid_shape,
    group_intervals,
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


def write_plot(report: SweepReport, path: Path) -> None:
    """Draw ``report.png``: a bar chart per reported metric (error bars = std over seeds)."""
    layout = bar_layout(report)
    shown = list(layout.cells.values())
    ranges = axis_ranges(group_intervals(shown, report.metrics))
    with figure_style() as plt:
        draw = _draw_ranked if layout.kind == "ranked" else _draw_vertical
        fig = draw(plt, report, layout, ranges)
        details = "; ".join(part for part in (seeds_note(shown), layout.note) if part)
        fig.suptitle(
            f"{report.sweep_dir.parent.name}/{report.sweep_dir.name}: mean ± std over seeds ({details})"
        )
        save(fig, path)


def _bar_stats(layout: BarLayout, metric: str, hue: int) -> tuple[list[int], list[float], list[float]]:
    """The categories of one hue that recorded ``metric``, with their means and stds."""
    positions, means, stds = [], [], []
    for category in range(len(layout.categories)):
        group = layout.cells.get((category, hue))
        mean, std = group.summary(metric) if group else (math.nan, math.nan)
        if not math.isnan(mean):
            positions.append(category)
            means.append(mean)
            stds.append(std)
    return positions, means, stds


def _note_missing(ax: Any, metric: str, drawn: bool) -> None:
    if not drawn:
        ax.text(0.5, 0.5, f"no run recorded\n{metric}", transform=ax.transAxes, ha="center", va="center")


def _draw_vertical(plt: Any, report: SweepReport, layout: BarLayout, ranges: dict) -> Any:
    """Vertical bars: one panel per metric, categories along x, hues side by side."""
    from matplotlib.patches import Patch

    metrics = report.metrics
    legend = len(layout.hues) > 1
    slots = len(layout.categories) * len(layout.hues)
    panel_width = max(MIN_PANEL_WIDTH_IN, BAR_SLOT_IN * slots + PANEL_MARGIN_IN)
    entries = layout.hues if legend else []
    room = MAX_WIDTH_IN - (legend_width(entries) if legend else 0.0)
    rows, columns = grid_shape(len(metrics), max(1, min(PANEL_COLUMNS, int(room // panel_width))))
    ticks = [wrap_label(label) for label in layout.categories]
    lines = max(tick.count("\n") + 1 for tick in ticks)
    widest = max(text_width(tick) for tick in ticks)
    rotate = widest > (panel_width - PANEL_MARGIN_IN) / len(layout.categories)
    tick_height = TICK_LINE_IN * lines + (widest * math.sin(math.radians(ROTATION)) if rotate else 0.0)
    size = figure_layout(columns, panel_width, rows * (PANEL_HEIGHT_IN + tick_height), entries)
    fig, axes = plt.subplots(rows, columns, figsize=size.size, squeeze=False, layout="constrained")
    colors = palette(len(layout.hues) if legend else len(layout.categories))
    bar = BAR_SPAN / len(layout.hues)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        drawn = False
        for hue in range(len(layout.hues)):
            positions, means, stds = _bar_stats(layout, metric, hue)
            offsets = [p - BAR_SPAN / 2 + bar * (hue + 0.5) for p in positions]
            color = [colors[hue]] * len(positions) if legend else [colors[p] for p in positions]
            ax.bar(offsets, means, width=bar, yerr=stds, capsize=3, color=color, alpha=0.9)
            drawn = drawn or bool(positions)
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
        handles = [Patch(color=colors[h], label=hue) for h, hue in enumerate(layout.hues)]
        add_legend(fig, handles, size)
    return fig


def _draw_ranked(plt: Any, report: SweepReport, layout: BarLayout, ranges: dict) -> Any:
    """Horizontal bars: one row per group (best on top), one panel per metric; labels left of the first."""
    metrics = report.metrics
    rows, columns = grid_shape(len(metrics), PANEL_COLUMNS)
    panels_height = rows * (RANKED_ROW_IN * len(layout.categories) + RANKED_MARGIN_IN)
    size = figure_layout(columns, MAX_WIDTH_IN / columns, panels_height, [])  # labels take the room they need
    fig, axes = plt.subplots(
        rows, columns, figsize=size.size, squeeze=False, sharey=True, layout="constrained"
    )
    (color,) = palette(1)
    for index, (ax, metric) in enumerate(zip(axes.flat, metrics, strict=False)):
        positions, means, stds = _bar_stats(layout, metric, 0)
        ax.barh(positions, means, xerr=stds, capsize=2, color=color, alpha=0.9, height=BAR_SPAN)
        ax.set_xlabel(axis_label(metric))
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", labelleft=index % columns == 0, length=0)
        if ranges.get(metric):
            ax.set_xlim(*ranges[metric])
        _note_missing(ax, metric, bool(positions))
    first = axes.flat[0]
    first.set_yticks(range(len(layout.categories)), layout.categories)
    first.set_ylim(len(layout.categories) - 0.5, -0.5)  # best on top
    hide_unused(axes, len(metrics))
    return fig
