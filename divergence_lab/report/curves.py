"""``report_curves.png``: per-epoch curves of every sweep, one line per group (mean over its seeds, band =
± sample std), one panel per quantity, one legend (with each group's number of runs) right of the panels.

The panels, in order:

* GCD sweeps (runs that leave ``gcd_curve.json``): Old, New and All clustering accuracy on ``D_u``;
* the training loss and the divergence term (``train/loss``, ``train/distill``: the epoch means the
  runs log), where the runs logged them;
* the validation metrics the runs log each epoch in their CSV log (``csv/metrics.csv``): ``val/acc`` and
  the ``val/`` counterpart of every reported metric (``test/nll`` → ``val/nll``), those some run logged.
  In GCD sweeps ``val/acc``, ``val/acc_old`` and ``val/acc_new`` repeat the GCD panels and are left out.

The epoch each run's test metrics come from (``selected_epoch`` in ``metrics.json``) is marked by a dotted
line in its group's colour. Where a curve has flattened (over its last half, the group means move less
than :data:`SATURATED_SHARE` of their whole range), an inset zooms on the last epochs, where the
differences the report compares are made.

A resumed run leaves the CSV of each earlier attempt as ``csv/metrics.attempt-<k>.csv``; the attempts are
merged in order (``k`` = 0, 1, ..., then ``metrics.csv``), a later attempt's value of a metric replacing an
earlier one's for the same epoch. Epochs are counted from 1 (epoch e = after e epochs of training). A
group's line covers the epochs all its runs logged; a run whose files cannot be read draws no line and
is not counted in the legend's n. Sweeps of more than 10 groups show the best 10 by the first reported
metric. Accuracy panels share one range (:mod:`~divergence_lab.report.figure_style`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from divergence_lab.ground.epoch_log import EpochValues, read_epoch_metrics
from divergence_lab.report.collect import SweepReport
from divergence_lab.report.figure_style import (
    add_legend,
    axis_ranges,
    figure_layout,
    figure_style,
    grid_shape,
    group_label,
    hide_unused,
    palette,
    ranked_groups,
    save,
    unique_labels,
)
from divergence_lab.report.metric_info import axis_label
from divergence_lab.report.selection import selected_epochs

CURVE_FILE = "gcd_curve.json"
GCD_PANELS = (("acc_old", "Old classes"), ("acc_new", "New classes"), ("acc_all", "All classes"))
GCD_AXIS_LABEL = "clustering accuracy on D_u (↑ better)"
GCD_REPEATED = ("val/acc", "val/acc_old", "val/acc_new")  # the GCD panels' numbers, as the CSV logs them
ALWAYS_DRAWN = "val/acc"
TRAINING_TERMS = ("train/loss", "train/distill")  # epoch means, drawn first where logged
SATURATED_SHARE = 0.1
MIN_ZOOM_EPOCHS = 6  # shorter curves get no inset
ZOOM_SHARE = 1 / 3  # the inset shows the last third of the epochs
INSET_LOW = (0.42, 0.08, 0.53, 0.42)  # of the panel (left, bottom, width, height): curves that end high
INSET_HIGH = (0.42, 0.5, 0.53, 0.42)  # curves that end low (losses): the inset goes where they have left
INSET_PAD = 0.05  # of the inset's value range, added above and below
MAX_LINES = 10
PANEL_COLUMNS = 3
PANEL_WIDTH_IN = 3.6
PANEL_HEIGHT_IN = 3.0
BAND_ALPHA = 0.18



def read_gcd_curve(job: Path) -> dict[str, EpochValues]:
    """``{"acc_old": {epoch: value}, ...}`` from the job's ``gcd_curve.json``; empty when unreadable."""
    path = job / CURVE_FILE
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())
        return {key: {int(row["epoch"]) + 1: float(row[key]) for row in rows} for key, _ in GCD_PANELS}
    except (OSError, ValueError, TypeError, KeyError):
        return {}


@dataclass
class CurveStats:
    """One group's curve: the epochs all its runs logged, the mean and sample std over the runs there."""

    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    runs: int


def curve_stats(runs: list[EpochValues]) -> CurveStats | None:
    """Mean and sample std (0 for a single run) over the runs, at the epochs every run logged; None when
    no run logged the metric or the runs share no epoch."""
    runs = [run for run in runs if run]
    if not runs:
        return None
    epochs = sorted(set.intersection(*(set(run) for run in runs)))
    if not epochs:
        return None
    values = np.array([[run[epoch] for epoch in epochs] for run in runs])
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(epochs))
    return CurveStats(np.array(epochs), values.mean(axis=0), std, len(runs))


@dataclass
class CurvePanel:
    """One panel: the quantity drawn (its name decides the axis range), its labels, a curve per group."""

    metric: str
    ylabel: str
    title: str = ""
    lines: dict[str, CurveStats] = field(default_factory=dict)  # group label -> curve
    selected: dict[str, list[int]] = field(default_factory=dict)  # group label -> its runs' selected epochs

    def saturated(self) -> bool:
        """Whether every curve has flattened: over the last half of the epochs, the means move less than
        :data:`SATURATED_SHARE` of the panel's whole range (and there are enough epochs to zoom on)."""
        means = [stats.mean for stats in self.lines.values() if len(stats.epochs) >= MIN_ZOOM_EPOCHS]
        if not means or len(means) < len(self.lines):
            return False
        whole = max(m.max() for m in means) - min(m.min() for m in means)
        late = max(float(np.ptp(m[len(m) // 2 :])) for m in means)
        return whole > 0 and late < SATURATED_SHARE * whole


def val_counterpart(metric: str) -> str | None:
    """``test/nll`` → ``val/nll``; None for a metric without a split (``wall_time_s``)."""
    split, _, name = metric.rpartition("/")
    return f"val/{name}" if split else None


def curve_metrics(reported: list[str], logged: set[str]) -> list[str]:
    """The training terms, ``val/acc`` and the ``val/`` counterparts of the reported metrics that are in
    ``logged``, in order."""
    wanted = [*TRAINING_TERMS, ALWAYS_DRAWN, *(val_counterpart(metric) for metric in reported)]
    return [metric for metric in dict.fromkeys(wanted) if metric in logged]


def curve_panels(report: SweepReport) -> tuple[list[CurvePanel], str]:
    """The figure's panels (see the module docstring) and a note on groups left out (empty when none)."""
    groups, note = ranked_groups(report, MAX_LINES)
    labels = unique_labels([group_label(report, group) for group in groups])
    jobs = {label: group.jobs for label, group in zip(labels, groups, strict=True)}
    chosen = selected_epochs(report.records)
    selected = {label: sorted({chosen[job] for job in jobs[label] if job in chosen}) for label in labels}
    gcd = {label: [read_gcd_curve(job) for job in jobs[label]] for label in labels}
    logs = {label: [read_epoch_metrics(job) for job in jobs[label]] for label in labels}
    has_gcd = any(curve for curves in gcd.values() for curve in curves)
    panels = [_panel(key, GCD_AXIS_LABEL, title, gcd) for key, title in GCD_PANELS] if has_gcd else []
    logged = {metric for runs in logs.values() for run in runs for metric in run}
    for metric in curve_metrics(report.metrics, logged):
        if not (has_gcd and metric in GCD_REPEATED):
            panels.append(_panel(metric, axis_label(metric), "", logs))
    for panel in panels:
        panel.selected = {label: epochs for label, epochs in selected.items() if label in panel.lines}
    return [panel for panel in panels if panel.lines], note


def _panel(metric: str, ylabel: str, title: str, runs: dict[str, list[dict[str, EpochValues]]]) -> CurvePanel:
    """The panel of ``metric``: each group's curve over its runs' values of it."""
    lines = {}
    for label, records in runs.items():
        stats = curve_stats([record.get(metric, {}) for record in records])
        if stats is not None:
            lines[label] = stats
    return CurvePanel(metric, ylabel, title, lines)


def legend_label(label: str, panels: list[CurvePanel]) -> str:
    """``kl (n=3)``: the group's label and its number of runs drawn (``n=2–3`` when panels differ)."""
    counts = sorted({panel.lines[label].runs for panel in panels if label in panel.lines})
    span = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"{label} (n={span})"


def write_curves(report: SweepReport, path: Path) -> bool:
    """Draw ``report_curves.png`` (see the module docstring); False, nothing written, without curves."""
    panels, note = curve_panels(report)
    if not panels:
        return False
    labels = list(dict.fromkeys(label for panel in panels for label in panel.lines))
    colors = dict(zip(labels, palette(len(labels)), strict=True))
    ranges = axis_ranges({panel.metric: _intervals(panel) for panel in panels})
    rows, columns = grid_shape(len(panels), PANEL_COLUMNS)
    entries = [legend_label(label, panels) for label in labels]
    size = figure_layout(columns, PANEL_WIDTH_IN, rows * PANEL_HEIGHT_IN, entries)
    with figure_style() as plt:
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator

        fig, axes = plt.subplots(rows, columns, figsize=size.size, squeeze=False, layout="constrained")
        for ax, panel in zip(axes.flat, panels, strict=False):
            for label, stats in panel.lines.items():
                marker = "o" if len(stats.epochs) == 1 else None  # a single epoch: a point, not a line
                ax.plot(stats.epochs, stats.mean, color=colors[label], linewidth=1.5, marker=marker)
                ax.fill_between(
                    stats.epochs,
                    stats.mean - stats.std,
                    stats.mean + stats.std,
                    color=colors[label],
                    alpha=BAND_ALPHA,
                )
            _mark_selected(ax, panel, colors)
            ax.set(xlabel="epoch", ylabel=panel.ylabel, title=panel.title)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if ranges.get(panel.metric):
                ax.set_ylim(*ranges[panel.metric])
            if panel.saturated():
                _zoom(ax, panel, colors)
        hide_unused(axes, len(panels))
        handles = [
            Line2D([], [], color=colors[label], label=entry)
            for label, entry in zip(labels, entries, strict=True)
        ]
        add_legend(fig, handles, size)
        details = f"; {note}" if note else ""
        fig.suptitle(f"Per epoch: mean over seeds, band = ± std; dotted: selected epochs{details}")
        save(fig, path)
    return True


def _mark_selected(ax: Any, panel: CurvePanel, colors: dict[str, Any]) -> None:
    """A dotted vertical line at each epoch a group's runs were tested from."""
    for label, epochs in panel.selected.items():
        for epoch in epochs:
            ax.axvline(epoch, color=colors[label], linestyle=":", linewidth=1, alpha=0.8)


def _zoom(ax: Any, panel: CurvePanel, colors: dict[str, Any]) -> None:
    """An inset of the last :data:`ZOOM_SHARE` of the epochs, its value axis fitted to them."""
    from matplotlib.ticker import MaxNLocator

    last = max(int(stats.epochs[-1]) for stats in panel.lines.values())
    start = max(1, round(last * (1 - ZOOM_SHARE)))
    bottom, top = ax.get_ylim()
    ends = [float(stats.mean[-1]) for stats in panel.lines.values()]
    inset = ax.inset_axes(INSET_HIGH if sum(ends) / len(ends) < (bottom + top) / 2 else INSET_LOW)
    inset.xaxis.set_major_locator(MaxNLocator(integer=True))
    low, high = math.inf, -math.inf
    for label, stats in panel.lines.items():
        keep = stats.epochs >= start
        inset.plot(stats.epochs[keep], stats.mean[keep], color=colors[label], linewidth=1.2)
        low = min(low, float((stats.mean[keep] - stats.std[keep]).min()))
        high = max(high, float((stats.mean[keep] + stats.std[keep]).max()))
        inset.fill_between(
            stats.epochs[keep],
            stats.mean[keep] - stats.std[keep],
            stats.mean[keep] + stats.std[keep],
            color=colors[label],
            alpha=BAND_ALPHA,
        )
    _mark_selected(inset, panel, colors)
    inset.set_xlim(start, last)
    if high > low:
        pad = (high - low) * INSET_PAD
        inset.set_ylim(low - pad, high + pad)
    inset.tick_params(labelsize=7)
    inset.set_title(f"epochs {start}–{last}", fontsize=7)


def _intervals(panel: CurvePanel) -> list[tuple[float, float]]:
    return [
        (float(low), float(high))
        for stats in panel.lines.values()
        for low, high in zip(stats.mean - stats.std, stats.mean + stats.std, strict=True)
    ]
