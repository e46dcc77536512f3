"""What every ``dlab-report`` figure shares: its size and fonts, its group labels, and its axis ranges.

Sizes (:func:`figure_layout`): figures are 8 to 12 inches wide at 120 dpi (readable when embedded in a
README), text is at least 8 pt, and a figure's one legend sits right of its panels, or below them when it
is too wide for that; never over the data.

Axis ranges (:func:`axis_ranges`), from the intervals a figure draws (mean ± std, per metric):

* every accuracy panel of one figure shares one range. Its floor is the largest multiple of 0.05 strictly
  below the lowest mean − std, its ceiling the smallest multiple of 0.05 strictly above the highest
  mean + std (at most 1). When the intervals spread over more than 0.25 (a quarter of the accuracy
  scale), the floor is 0: a cropped baseline no longer helps to read such differences. A 0.5-point gap
  between two groups near 0.92 is thus drawn on 0.90 – 0.95, not on matplotlib's automatic 0.917 – 0.928;
* any other metric whose values are all non-negative (ECE, NLL, Brier score, times ...) starts at 0;
* a metric with negative values keeps matplotlib's automatic range.

Labels: sweep values that are long decimals (an Optuna trial's ``0.123456789012``) are shown with
:data:`SIGNIFICANT_DIGITS` significant digits, in group labels (:func:`group_label`, the report's own
labels with the study's display names) and in ``key=value`` labels (:func:`value_label`). Sweeps of many
groups show the best :data:`MAX_RANKED` by the first reported metric (:func:`ranked_groups`).
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.metric_info import direction, is_accuracy

DPI = 120
MIN_WIDTH_IN = 8.0
MAX_WIDTH_IN = 12.0
CHAR_WIDTH_IN = 0.07  # inches per character of 8.5-pt text (tick labels, legend entries)
LEGEND_HANDLE_IN = 0.8  # inches of a legend entry beside its text (the handle, padding)
LEGEND_ROW_IN = 0.25  # inches per row of legend entries
LEGEND_PAD_IN = 0.3  # inches of a legend's frame and padding
STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8.5,
    "ytick.labelsize": 8.5,
    "legend.fontsize": 8.5,
    "legend.title_fontsize": 9,
    "figure.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
SIGNIFICANT_DIGITS = 4
ACCURACY_STEP = 0.05  # accuracy axes start and end on multiples of this
ACCURACY_SPREAD_TO_ZERO = 0.25  # intervals spread wider than this: the accuracy axis starts at 0
TITLE_IN = 0.5  # inches of a figure's title
HEADROOM = 1.08  # a zero-based axis ends this much above the highest value
MAX_RANKED = 25  # groups a figure shows at most: the best by the first reported metric
LABEL_WIDTH = 20  # characters per line of a wrapped label

_LONG_DECIMAL = re.compile(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w.])")


@contextmanager
def figure_style() -> Iterator[Any]:
    """``pyplot`` (on the file-only Agg backend) with the report's fonts, for the duration of a figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        yield plt


def text_width(text: str) -> float:
    """About how many inches the longest line of ``text`` takes at 8.5 pt."""
    return max(len(line) for line in text.split("\n")) * CHAR_WIDTH_IN


def legend_width(labels: list[str]) -> float:
    """About how many inches a legend of these entries takes right of the panels (0 without entries)."""
    return max((text_width(label) for label in labels), default=-LEGEND_HANDLE_IN) + LEGEND_HANDLE_IN


def legend_height(labels: list[str], columns: int = 1) -> float:
    """About how many inches tall a legend of these one-line entries is, in ``columns`` columns."""
    return math.ceil(len(labels) / columns) * LEGEND_ROW_IN + LEGEND_PAD_IN


@dataclass
class FigureLayout:
    """A figure's size in inches and where its legend goes (right of the panels, or below them)."""

    width: float
    height: float
    legend_below: bool = False
    legend_columns: int = 1

    @property
    def size(self) -> tuple[float, float]:
        return self.width, self.height


def figure_layout(
    panel_columns: int, panel_width_in: float, panels_height_in: float, legend_labels: list[str]
) -> FigureLayout:
    """Size the figure: its panels, its title, and its legend, which goes right of the panels when the
    figure stays within 12 inches wide, else below them in as many columns as fit; the width is kept
    within 8 to 12 inches, the height grows for a legend taller than the panels."""
    panels_width = panel_columns * panel_width_in
    if not legend_labels:
        return FigureLayout(_clamp_width(panels_width), panels_height_in + TITLE_IN)
    entry_width = legend_width(legend_labels)
    if panels_width + entry_width <= MAX_WIDTH_IN:
        height = max(panels_height_in, legend_height(legend_labels)) + TITLE_IN
        return FigureLayout(_clamp_width(panels_width + entry_width), height)
    columns = max(1, int(MAX_WIDTH_IN // entry_width))
    height = panels_height_in + legend_height(legend_labels, columns) + TITLE_IN
    width = _clamp_width(max(panels_width, columns * entry_width))
    return FigureLayout(width, height, legend_below=True, legend_columns=columns)


def _clamp_width(width: float) -> float:
    return min(MAX_WIDTH_IN, max(MIN_WIDTH_IN, width))


def save(fig: Any, path: Path) -> None:
    """Write the figure as a PNG of its own size (no tight cropping) at :data:`DPI`, then free it."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def short_number(text: str) -> str:
    """``0.123456789012`` → ``0.1235`` (:data:`SIGNIFICANT_DIGITS` significant digits); other text as is."""
    return _LONG_DECIMAL.sub(lambda match: _rounded(match.group()), text)


def _rounded(number: str) -> str:
    value = float(number)
    shown = f"{value:.{SIGNIFICANT_DIGITS}g}"
    return shown if len(shown) < len(number) else number


def group_label(report: SweepReport, group: Group) -> str:
    """The group's label in figures: the report's label (display names applied), long decimals rounded."""
    return short_number(report.label(group))


def value_label(report: SweepReport, key: str, value: str) -> str:
    """One swept value as figures name it: its display name, else ``key=value`` (value rounded)."""
    return report.display_names.get(value) or f"{key}={short_number(value)}"


def unique_labels(labels: list[str]) -> list[str]:
    """The labels, a repeated one (two groups alike once rounded) numbered: ``kl``, ``kl (2)``."""
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return unique


def wrap_label(label: str, width: int = LABEL_WIDTH) -> str:
    """The label on several lines: one per ``key=value`` part, a part with spaces wrapped at ``width``
    characters (a word, such as ``divergence.temperature=1``, is never cut)."""
    parts = label.split(", ")
    wrapped = (textwrap.wrap(part, width, break_long_words=False, break_on_hyphens=False) for part in parts)
    return "\n".join(line for lines, part in zip(wrapped, parts, strict=True) for line in lines or [part])


def ranked_groups(report: SweepReport, limit: int = MAX_RANKED) -> tuple[list[Group], str]:
    """The groups a figure shows: all of them when they are at most ``limit``, else the best ``limit`` by
    the first reported metric (its direction decides; groups without it last), with a note saying so."""
    if len(report.groups) <= limit:
        return list(report.groups), ""
    metric = report.metrics[0]
    return sort_by_metric(report.groups, metric)[
        :limit
    ], f"best {limit} of {len(report.groups)} groups by {metric}"


def sort_by_metric(groups: Iterable[Group], metric: str) -> list[Group]:
    """Best first by the mean of ``metric`` (highest first unless lower is better); groups without it last."""

    def rank(group: Group) -> tuple[bool, float]:
        mean, _ = group.summary(metric)
        if math.isnan(mean):
            return True, 0.0
        return False, mean if direction(metric) < 0 else -mean

    return sorted(groups, key=rank)


def accuracy_range(intervals: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """The shared range of the accuracy panels (see the module docstring); None without a finite value."""
    finite = [(low, high) for low, high in intervals if math.isfinite(low) and math.isfinite(high)]
    if not finite:
        return None
    low = max(0.0, min(low for low, _ in finite))
    high = min(1.0, max(high for _, high in finite))
    floor = ACCURACY_STEP * (math.ceil(round(low / ACCURACY_STEP, 9)) - 1)
    if high - low > ACCURACY_SPREAD_TO_ZERO or floor <= 0:
        floor = 0.0
    ceiling = min(1.0, ACCURACY_STEP * (math.floor(round(high / ACCURACY_STEP, 9)) + 1))
    return round(floor, 10), round(ceiling, 10)


def zero_based_range(intervals: Iterable[tuple[float, float]]) -> tuple[float, float] | None:
    """``(0, highest × 1.08)`` when no value is negative; None (automatic) otherwise or without values."""
    finite = [(low, high) for low, high in intervals if math.isfinite(low) and math.isfinite(high)]
    if not finite or min(low for low, _ in finite) < 0:
        return None
    highest = max(high for _, high in finite)
    return 0.0, (highest * HEADROOM if highest > 0 else 1.0)


def axis_ranges(
    intervals: dict[str, list[tuple[float, float]]],
) -> dict[str, tuple[float, float] | None]:
    """The value-axis range of each metric's panel, from the ``(low, high)`` intervals the panel draws:
    one range shared by all accuracy panels, zero-based ranges for the others (see the module docstring)."""
    shared = accuracy_range(
        pair for metric, pairs in intervals.items() if is_accuracy(metric) for pair in pairs
    )
    return {
        metric: shared if is_accuracy(metric) else zero_based_range(pairs)
        for metric, pairs in intervals.items()
    }


def palette(count: int) -> list[Any]:
    """``count`` distinguishable colours (matplotlib's tab10, tab20 beyond ten; repeated beyond twenty)."""
    from matplotlib import colormaps

    colors = list(colormaps["tab10" if count <= 10 else "tab20"].colors)
    return [colors[i % len(colors)] for i in range(count)]


def group_intervals(groups: Iterable[Group], metrics: Iterable[str]) -> dict[str, list[tuple[float, float]]]:
    """Each metric's ``(mean − std, mean + std)`` over the groups that recorded it."""
    intervals: dict[str, list[tuple[float, float]]] = {}
    groups = list(groups)
    for metric in metrics:
        stats = [group.summary(metric) for group in groups]
        intervals[metric] = [(mean - std, mean + std) for mean, std in stats if not math.isnan(mean)]
    return intervals


def seeds_note(groups: Iterable[Group]) -> str:
    """``n = 3 seeds per group``, or ``n = 2–3 seeds per group`` when the groups differ."""
    counts = sorted({len(group.seeds) for group in groups})
    if not counts:
        return ""
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"n = {span} seed{'s' if counts[-1] > 1 else ''} per group"


def grid_shape(panels: int, max_columns: int) -> tuple[int, int]:
    """``(rows, columns)`` of a grid of ``panels``: as few rows as ``max_columns`` allows, rows balanced
    (four panels are 2 × 2, not 3 + 1)."""
    rows = math.ceil(panels / max_columns)
    return rows, math.ceil(panels / rows)


def add_legend(fig: Any, handles: list[Any], layout: FigureLayout) -> None:
    """The figure's legend where ``layout`` puts it: right of the panels, vertically centred (clear of the
    title), or below them."""
    place = "outside lower center" if layout.legend_below else "outside right center"
    fig.legend(handles=handles, loc=place, ncols=layout.legend_columns)


def hide_unused(axes: Any, used: int) -> None:
    """Switch off the panels of a grid beyond the first ``used`` ones."""
    for ax in axes.flat[used:]:
        ax.axis("off")
