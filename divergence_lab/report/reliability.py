"""``report_reliability.png``: one reliability diagram per group, its runs' ``reliability.json`` pooled.

Each panel shows accuracy against confidence per confidence bin (one line per evaluated network: the
model, and the teacher where one is evaluated too), the diagonal of perfect calibration, and under it
the number of test samples in each bin (log scale). A bin holding fewer than :data:`FEW_SAMPLES` pooled
samples is drawn as a hollow marker: its accuracy rests on a handful of predictions, so a dip there is
noise, not miscalibration. Sweeps of more than 12 groups show the best 12 by the first reported metric.

A panel's title gives the **pooled** ECE (of the pooled bins: one diagram over all the group's test
predictions) and, beside it, the **per-seed** mean ± std of the runs' own ``test/ece``, which the tables
and tests use. The two differ (ECE is not linear in the bins), and can order the groups differently.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.figure_style import (
    add_legend,
    figure_layout,
    figure_style,
    grid_shape,
    group_label,
    palette,
    ranked_groups,
    save,
    seeds_note,
    wrap_label,
)

RELIABILITY_FILE = "reliability.json"
SEED_ECE = "test/ece"  # the runs' own ECE, averaged over seeds beside the pooled one
FEW_SAMPLES = 10  # a pooled bin with fewer samples is marked (hollow marker)
MAX_PANELS = 12
PANEL_COLUMNS = 4
PANEL_WIDTH_IN = 2.6
CURVE_HEIGHT_IN = 2.5
COUNTS_HEIGHT_IN = 0.9
PANEL_TITLE_IN = 0.75
MARKER_SIZE = 4
UNIT_RANGE = (-0.03, 1.03)  # [0, 1] with room for the markers on its edges


def pooled_reliability(group: Group) -> dict[str, dict[str, list[float] | float]]:
    """Reliability bins of each evaluated network, pooled over the group's seeds (``reliability.json``).

    Pooling sums the counts and count-weights the per-bin confidence and accuracy; the ECE shown is that
    of the pooled predictions.
    """
    pooled: dict[str, dict] = {}
    for job in group.jobs:
        path = job / RELIABILITY_FILE
        if not path.is_file():
            continue
        for network, bins in json.loads(path.read_text()).items():
            entry = pooled.setdefault(
                network,
                {
                    "edges": bins["edges"],
                    "count": [0] * len(bins["count"]),
                    "conf": [0.0] * len(bins["count"]),
                    "acc": [0.0] * len(bins["count"]),
                },
            )
            for b, n in enumerate(bins["count"]):
                entry["count"][b] += n
                entry["conf"][b] += n * bins["confidence"][b]
                entry["acc"][b] += n * bins["accuracy"][b]
    for entry in pooled.values():
        total = sum(entry["count"]) or 1
        entry["ece"] = sum(abs(a - c) for a, c in zip(entry["acc"], entry["conf"], strict=True)) / total
        entry["confidence"] = [
            c / n if n else float("nan") for c, n in zip(entry["conf"], entry["count"], strict=True)
        ]
        entry["accuracy"] = [
            a / n if n else float("nan") for a, n in zip(entry["acc"], entry["count"], strict=True)
        ]
    return pooled


@dataclass
class BinPoint:
    """One non-empty confidence bin of a pooled reliability diagram."""

    confidence: float
    accuracy: float
    count: int

    @property
    def few(self) -> bool:
        """Fewer than :data:`FEW_SAMPLES` samples: the point is marked, not trusted."""
        return self.count < FEW_SAMPLES


def bin_points(bins: dict[str, Any]) -> list[BinPoint]:
    """The non-empty bins of one network's pooled diagram, in confidence order, with their counts."""
    return [
        BinPoint(confidence, accuracy, count)
        for confidence, accuracy, count in zip(
            bins["confidence"], bins["accuracy"], bins["count"], strict=True
        )
        if count
    ]


@dataclass
class ReliabilityPanel:
    """One group's panel: its label and each evaluated network's pooled bins."""

    label: str
    networks: dict[str, dict[str, Any]]
    seed_eces: list[float] = field(default_factory=list)  # the runs' own test/ece, which the tables average


def reliability_panels(report: SweepReport) -> tuple[list[ReliabilityPanel], str]:
    """The panels of the figure (groups without reliability data left out) and a note on groups not shown."""
    groups, note = ranked_groups(report, MAX_PANELS)
    panels = [
        ReliabilityPanel(
            group_label(report, group), pooled_reliability(group), group.values.get(SEED_ECE, [])
        )
        for group in groups
    ]
    return [panel for panel in panels if panel.networks], note


def _title(panel: ReliabilityPanel) -> str:
    """The group, its pooled ECE (per network), and the per-seed mean ± std of its runs' test ECE."""
    (_, first), *others = [(network, bins["ece"]) for network, bins in panel.networks.items()]
    pooled = f"pooled ECE {first:.3f}"  # the trained network's; the others' (the teacher's) in brackets
    if others:
        pooled += " (" + ", ".join(f"{network} {ece:.3f}" for network, ece in others) + ")"
    seeds = panel.seed_eces
    if len(seeds) > 1:
        pooled += f"\nper seed {statistics.fmean(seeds):.3f} ± {statistics.stdev(seeds):.3f}"
    elif seeds:
        pooled += f"\nper seed {seeds[0]:.3f}"
    return f"{wrap_label(panel.label)}\n{pooled}"


def write_reliability_grid(report: SweepReport, path: Path) -> bool:
    """Draw ``report_reliability.png`` (see the module docstring); False, nothing written, without data."""
    panels, note = reliability_panels(report)
    if not panels:
        return False
    networks = list(dict.fromkeys(network for panel in panels for network in panel.networks))
    colors = dict(zip(networks, palette(len(networks)), strict=True))
    rows, columns = grid_shape(len(panels), PANEL_COLUMNS)
    handles = _legend_handles(colors)
    legend_entries = [handle.get_label() for handle in handles]
    panels_height = rows * (CURVE_HEIGHT_IN + COUNTS_HEIGHT_IN + PANEL_TITLE_IN)
    size = figure_layout(columns, PANEL_WIDTH_IN, panels_height, legend_entries)
    with figure_style() as plt:
        fig = plt.figure(figsize=size.size, layout="constrained")
        grid = fig.add_gridspec(2 * rows, columns, height_ratios=[CURVE_HEIGHT_IN, COUNTS_HEIGHT_IN] * rows)
        for index, panel in enumerate(panels):
            row, column = divmod(index, columns)
            curve_ax = fig.add_subplot(grid[2 * row, column])
            counts_ax = fig.add_subplot(grid[2 * row + 1, column], sharex=curve_ax)
            _draw_panel(curve_ax, counts_ax, panel, colors)
            if column == 0:
                curve_ax.set_ylabel("accuracy")
                counts_ax.set_ylabel("samples")
            counts_ax.set_xlabel("confidence")
        add_legend(fig, handles, size)
        bins = len(next(iter(panels[0].networks.values()))["count"])
        details = "; ".join(part for part in (seeds_note(report.groups), note) if part)
        fig.suptitle(f"Reliability: {bins} confidence bins, pooled over seeds ({details})")
        save(fig, path)
    return True


def _draw_panel(curve_ax: Any, counts_ax: Any, panel: ReliabilityPanel, colors: dict[str, Any]) -> None:
    """The reliability curve of each network (hollow markers on bins with few samples) and the bin counts."""
    curve_ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
    networks = list(panel.networks.items())
    for index, (network, bins) in enumerate(networks):
        points = bin_points(bins)
        color = colors[network]
        curve_ax.plot(
            [p.confidence for p in points], [p.accuracy for p in points], "-", color=color, linewidth=1.2
        )
        for few in (False, True):
            chosen = [p for p in points if p.few == few]
            curve_ax.plot(
                [p.confidence for p in chosen],
                [p.accuracy for p in chosen],
                "o",
                markersize=MARKER_SIZE,
                color=color,
                markerfacecolor="white" if few else color,
            )
        edges = bins["edges"]  # the networks' bars side by side within each bin
        widths = [(right - left) / len(networks) for left, right in zip(edges, edges[1:], strict=False)]
        lefts = [left + index * width for left, width in zip(edges, widths, strict=False)]
        counts_ax.bar(lefts, bins["count"], width=widths, align="edge", color=color, alpha=0.8)
    counts_ax.axhline(FEW_SAMPLES, color="gray", linestyle=":", linewidth=1)
    curve_ax.set(xlim=UNIT_RANGE, ylim=UNIT_RANGE, title=_title(panel))
    curve_ax.tick_params(labelbottom=False)
    counts_ax.set_yscale("log")
    counts_ax.set_ylim(bottom=0.8)


def _legend_handles(colors: dict[str, Any]) -> list[Any]:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=color, marker="o", markersize=MARKER_SIZE, label=name)
        for name, color in colors.items()
    ]
    handles += [
        Line2D([], [], color="gray", marker="o", linestyle="", markerfacecolor="white",
               markersize=MARKER_SIZE, label=f"bin of < {FEW_SAMPLES} samples"),
        Line2D([], [], color="gray", linestyle="--", label="perfect calibration"),
        Line2D([], [], color="gray", linestyle=":", label=f"{FEW_SAMPLES} samples (counts)"),
    ]  # fmt: skip
    return handles
