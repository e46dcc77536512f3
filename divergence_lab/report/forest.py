"""``report_forest.png``: the decision figure — paired differences against the baseline, one panel per metric.

One row per compared group, ``Δ = group − baseline`` on the x axis (the baseline is the vertical line at 0):

* small grey dots: ``d_i`` of each paired seed;
* a diamond with a horizontal bar: the mean ``d̄`` and its 95 % interval (no bar where the report gives no
  interval: fewer than three seeds, or no spread); filled when the difference is significant after the
  correction, hollow otherwise; coloured by the verdict (better / worse / other);
* a shaded band ``[−MDE, +MDE]`` around 0: the true effects the study could not reliably detect. A hollow
  diamond inside the band is "no difference detected", not "no difference".

The x label says which side is better for a metric with a direction. Rows are in the order of the
comparison table (best first).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from divergence_lab.report.comparison import Baseline, MetricComparison
from divergence_lab.report.figure_style import (
    MAX_RANKED,
    figure_layout,
    figure_style,
    grid_shape,
    hide_unused,
    save,
    short_number,
)
from divergence_lab.report.metric_info import axis_label
from divergence_lab.report.tables import CORRECTION_NAMES

PANEL_COLUMNS = 2
PANEL_HEIGHT_IN = 3.0  # inches of a panel at least
ROW_IN = 0.42  # inches per compared group
MARGIN_IN = 1.1  # inches of a panel beside its rows (axis label, title)
PANEL_WIDTH_IN = 5.5
SEED_JITTER = 0.18  # vertical spread of the per-seed dots, in rows
MDE_COLOR = "0.85"
VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red"}
NEUTRAL_COLOR = "tab:blue"
DIAMOND_SIZE = 8


def _rows(comparison: MetricComparison) -> list[Any]:
    rows = [row for row in comparison.rows if row.difference is not None and not row.is_baseline]
    return sorted(rows, key=lambda r: (r.stratum, r.rank.position if r.rank else 0))[:MAX_RANKED]


def _better_side(direction: int) -> str:
    return {1: " (→ better)", -1: " (← better)", 0: ""}[direction]


def write_forest_plot(
    comparisons: list[MetricComparison], baseline: Baseline | None, names: dict[str, str], path: Path
) -> bool:
    """Draw ``report_forest.png``; False (nothing written) without a baseline or any paired difference."""
    panels = [(c, rows) for c in comparisons if (rows := _rows(c))]
    if baseline is None or not panels:
        return False
    rows_shown = max(len(rows) for _, rows in panels)
    grid_rows, columns = grid_shape(len(panels), PANEL_COLUMNS)
    height = grid_rows * max(PANEL_HEIGHT_IN, ROW_IN * rows_shown + MARGIN_IN)
    size = figure_layout(columns, PANEL_WIDTH_IN, height, [])
    with figure_style() as plt:
        fig, axes = plt.subplots(grid_rows, columns, figsize=size.size, squeeze=False, layout="constrained")
        for ax, (comparison, rows) in zip(axes.flat, panels, strict=False):
            _draw_panel(ax, comparison, rows, baseline.describe(names))
        hide_unused(axes, len(panels))
        settings = panels[0][0].settings
        fig.suptitle(
            f"Paired Δ vs {baseline.describe(names)} per seed (dots), mean with 95 % CI; filled: significant "
            f"({CORRECTION_NAMES[settings.correction]}, α = {settings.alpha:g}); grey band: ± MDE at "
            f"{settings.power:.0%} power"
        )
        save(fig, path)
    return True


def _draw_panel(ax: Any, comparison: MetricComparison, rows: list[Any], baseline_name: str) -> None:
    import numpy as np

    extent = 0.0
    for y, row in enumerate(rows):
        difference = row.difference
        mde = difference.mde
        if mde is not None and math.isfinite(mde):
            ax.fill_betweenx([y - 0.4, y + 0.4], -mde, mde, color=MDE_COLOR, zorder=0, linewidth=0)
            extent = max(extent, mde)
        seeds = [d for _, d in difference.by_seed]
        jitter = np.linspace(-SEED_JITTER, SEED_JITTER, len(seeds)) if len(seeds) > 1 else [0.0]
        ax.scatter(seeds, [y + j for j in jitter], s=12, color="0.45", zorder=2, linewidths=0)
        extent = max([extent, *(abs(v) for v in seeds)])
        kind = row.verdict.kind if row.verdict else "untested"
        color = VERDICT_COLORS.get(kind, NEUTRAL_COLOR)
        filled = row.verdict is not None and row.verdict.significant
        if difference.ci is not None:
            low, high = difference.ci
            ax.hlines(y, low, high, color=color, linewidth=2, zorder=3)
            extent = max(extent, abs(low), abs(high))
        ax.plot(
            difference.mean, y, marker="D", markersize=DIAMOND_SIZE, color=color, zorder=4,
            markerfacecolor=color if filled else "white", markeredgewidth=1.5,
        )  # fmt: skip
    ax.axvline(0.0, color="0.2", linewidth=1, zorder=1)
    ax.set_yticks(range(len(rows)), [short_number(row.label) for row in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    if extent > 0:
        ax.set_xlim(-1.15 * extent, 1.15 * extent)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(f"Δ = group − {baseline_name}{_better_side(comparison.direction)}")
    ax.set_title(axis_label(comparison.metric), loc="left")
