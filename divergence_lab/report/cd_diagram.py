"""``report_cd.png``: the critical-difference diagram of a sweep across datasets (Demšar 2006, Fig. 1).

Each setting sits on the rank axis at its average rank over the datasets (1 = best, on the left), its name
beside it. A thick bar joins settings the tests could not separate: when the Friedman test rejects, the
Nemenyi cliques (settings whose pairwise p-values are all at least α, i.e. average ranks within CD of each
other); when it does not, one bar joins every setting, because the study could not separate them. The CD
bar above the axis shows the critical difference on the same scale. The numbers are
:mod:`divergence_lab.report.across_datasets`'s; the drawing is ``scikit_posthocs.critical_difference_diagram``
in the report's style (:mod:`divergence_lab.report.figure_style`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from divergence_lab.report.across_datasets import (
    SIGNIFICANCE_LEVEL,
    AcrossDatasets,
    Friedman,
    across_datasets,
)
from divergence_lab.report.collect import SweepReport
from divergence_lab.report.figure_style import (
    DPI,
    MAX_WIDTH_IN,
    MIN_WIDTH_IN,
    TITLE_IN,
    figure_style,
    palette,
    save,
    text_width,
    unique_labels,
)
from divergence_lab.report.metric_info import axis_label

AXIS_IN = 5.0  # inches of the rank axis
ROW_IN = 0.28  # inches per row of labels or bars below the axis
ABOVE_AXIS_ROWS = 2.5  # rows above the axis: tick labels and the CD bar
BELOW_LABELS_ROWS = 0.6  # rows below the lowest label
RANK_PAD = 0.08  # ranks beside 1 and k on the axis, so that the end markers are drawn whole
CD_BAR_Y = 1.6  # height of the CD bar, in rows above the axis
CD_TICK = 0.15  # half-height of the CD bar's end ticks, in rows
SIDE_PAD_IN = 0.4  # inches beside the labels
MAX_LABEL_CHARS = 40  # longer setting names are cut, so that the rank axis keeps its width
LABEL_GAP = 0.05  # ranks between a label and its elbow line
LABEL_FORMAT = "{label} ({rank:.2f})"  # left of the axis; the right side mirrors it
TITLE_SECOND_LINE_IN = 0.25  # inches the title's second line adds to the figure's title
NOT_SEPARATED = 1.0  # the p-value of every pair when the Friedman test does not reject: one bar joins all


def _labels(settings: list[str]) -> list[str]:
    """The settings' names as the diagram shows them: cut to :data:`MAX_LABEL_CHARS` (``…``), unique."""
    cut = [name if len(name) <= MAX_LABEL_CHARS else name[: MAX_LABEL_CHARS - 1] + "…" for name in settings]
    return unique_labels(cut)


def _significance(analysis: AcrossDatasets) -> list[list[float]]:
    """The pairwise p-values the diagram joins by: Nemenyi's, else all :data:`NOT_SEPARATED`."""
    if analysis.nemenyi_p is not None:
        return analysis.nemenyi_p
    k = len(analysis.settings)
    return [[NOT_SEPARATED] * k for _ in range(k)]


def _title(analysis: AcrossDatasets, friedman: Friedman, cd: float) -> str:
    n, k = friedman.n, friedman.k
    p = f"p = {friedman.p_value:.2g}"
    verdict = (
        f"Friedman {p} < {SIGNIFICANCE_LEVEL}: bars join settings within CD (Nemenyi)"
        if friedman.separates
        else f"Friedman {p} ≥ {SIGNIFICANCE_LEVEL}: the study could not separate them"
    )
    return (
        f"{axis_label(analysis.metric)}: average rank over N = {n} datasets, k = {k} settings (1 = best)\n"
        f"{verdict}; CD = {cd:.2f} (α = {SIGNIFICANCE_LEVEL})"
    )


def _draw_cd_bar(ax: Any, cd: float) -> None:
    """The critical difference as a bar from rank 1, above the axis, with its value over it."""
    ax.plot([1, 1 + cd], [CD_BAR_Y, CD_BAR_Y], color="k", linewidth=1.5)
    for x in (1, 1 + cd):
        ax.plot([x, x], [CD_BAR_Y - CD_TICK, CD_BAR_Y + CD_TICK], color="k", linewidth=1.5)
    ax.text(1 + cd / 2, CD_BAR_Y + 2 * CD_TICK, f"CD = {cd:.2f}", ha="center", va="bottom")


def write_cd_diagram(report: SweepReport, path: Path) -> bool:
    """Write ``report_cd.png`` for a sweep across datasets; False (nothing written) when the sweep has no
    Friedman test (fewer than two datasets or settings, see :mod:`divergence_lab.report.across_datasets`)."""
    analysis = across_datasets(report)
    if analysis is None or analysis.average_ranks is None:
        return False
    friedman, cd = analysis.friedman, analysis.critical_difference
    if friedman is None or cd is None:
        return False
    import pandas as pd
    import scikit_posthocs

    names, k = _labels(analysis.settings), len(analysis.settings)
    ranks = pd.Series(analysis.average_ranks, index=names)
    significance = pd.DataFrame(_significance(analysis), index=names, columns=names)
    ordered = list(ranks.sort_values().index)
    split = math.ceil(k / 2)  # the library puts the better half on the left
    label_width = [
        max((text_width(LABEL_FORMAT.format(label=name, rank=ranks[name])) for name in side), default=0.0)
        for side in (ordered[:split], ordered[split:])
    ]
    width = min(MAX_WIDTH_IN, max(MIN_WIDTH_IN, sum(label_width) + AXIS_IN + 2 * SIDE_PAD_IN))
    colors = dict(zip(names, palette(k), strict=True))
    with figure_style() as plt:
        fig, ax = plt.subplots(figsize=(width, 1.0), dpi=DPI)
        ax.grid(False)
        ax.spines["top"].set_visible(True)  # the rank axis (the report's style hides top spines)
        artists = scikit_posthocs.critical_difference_diagram(
            ranks,
            significance,
            ax=ax,
            alpha=SIGNIFICANCE_LEVEL,
            color_palette=colors,
            label_fmt_left=LABEL_FORMAT,
            label_fmt_right="({rank:.2f}) {label}",
            crossbar_props={"linewidth": 3},
            text_h_margin=LABEL_GAP,
        )
        _draw_cd_bar(ax, cd)
        lowest = min(min(elbow.get_ydata()) for elbow in artists["elbows"])
        ax.set_xlim(1 - RANK_PAD, k + RANK_PAD)
        ax.set_xticks(range(1, k + 1))
        ax.set_ylim(lowest - BELOW_LABELS_ROWS, ABOVE_AXIS_ROWS)
        title_in = TITLE_IN + TITLE_SECOND_LINE_IN
        height = (ABOVE_AXIS_ROWS - lowest + BELOW_LABELS_ROWS) * ROW_IN + title_in
        fig.set_size_inches(width, height)
        left = (label_width[0] + SIDE_PAD_IN) / width
        right = 1 - (label_width[1] + SIDE_PAD_IN) / width
        fig.subplots_adjust(left=left, right=right, bottom=0.0, top=1 - title_in / height)
        fig.suptitle(_title(analysis, friedman, cd))
        save(fig, path)
    return True
