"""Per-class results of a sweep: each group's per-class test accuracy (``report.md``) and its confusion
matrix (``report_confusion.png``), where the data have at most :data:`MAX_CLASSES` classes.

A run records ``per_class_acc`` in ``metrics.json`` (the recall of each class, ``null`` for a class without
test examples) and the counts ``M[true, predicted]`` in ``confusion.json``. Per group:

* per-class accuracy: the mean over the group's runs of each class's recall (runs without the class left
  out of that class's mean);
* the confusion matrix: the counts summed over the group's runs, each row divided by its total, so a cell
  is the share of a true class predicted as a class (rows sum to 1; the diagonal is the per-class recall of
  the pooled predictions).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from divergence_lab.ground.record_format import CONFUSION_FILE, PER_CLASS_KEY
from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.figure_style import (
    figure_layout,
    figure_style,
    grid_shape,
    group_label,
    hide_unused,
    ranked_groups,
    save,
    seeds_note,
    wrap_label,
)

MAX_CLASSES = 20  # more classes: no table and no figure (a matrix of them cannot be read)
MAX_PANELS = 12
PANEL_COLUMNS = 4
PANEL_IN = 2.8  # inches per panel, square
COLOR_MAP = "Blues"


def _read_counts(job: Path) -> np.ndarray | None:
    try:
        record = json.loads((job / CONFUSION_FILE).read_text())
        counts = np.asarray(record["counts"], dtype=np.float64)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    square = counts.ndim == 2 and counts.shape[0] == counts.shape[1] and counts.shape[0] <= MAX_CLASSES
    return counts if square else None


def pooled_confusion(group: Group) -> np.ndarray | None:
    """The group's confusion counts summed over its runs, rows normalised; None when no run left one (or
    the runs disagree on the number of classes)."""
    matrices = [counts for job in group.jobs if (counts := _read_counts(job)) is not None]
    if not matrices or len({m.shape for m in matrices}) != 1:
        return None
    total = np.sum(matrices, axis=0)
    rows = total.sum(axis=1, keepdims=True)
    return np.divide(total, rows, out=np.zeros_like(total), where=rows > 0)


def per_class_means(records: list[dict[str, Any]]) -> list[float | None] | None:
    """Each class's mean recall over the runs that recorded it; None without a record of at most
    :data:`MAX_CLASSES` classes."""
    lists = [r[PER_CLASS_KEY] for r in records if isinstance(r.get(PER_CLASS_KEY), list)]
    if not lists or len({len(values) for values in lists}) != 1 or len(lists[0]) > MAX_CLASSES:
        return None
    means = []
    for values in zip(*lists, strict=True):
        numbers = [v for v in values if isinstance(v, int | float)]
        means.append(statistics.fmean(numbers) if numbers else None)
    return means


def per_class_lines(report: SweepReport) -> list[str]:
    """The Markdown section of per-class test accuracy (mean over seeds), a row per group; empty without."""
    by_job = dict(report.records)
    rows = []
    for group in report.groups:
        means = per_class_means([by_job[job] for job in group.jobs if job in by_job])
        if means is not None:
            rows.append((report.label(group), means))
    if not rows or len({len(means) for _, means in rows}) != 1:
        return []
    classes = len(rows[0][1])
    header = "| group | " + " | ".join(str(c) for c in range(classes)) + " |"
    lines = [
        "## Per-class test accuracy",
        "",
        "Mean over seeds of each class's recall; the lowest per group in bold.",
        "",
    ]
    lines += [header, "|" + "---|" * (classes + 1)]
    for label, means in rows:
        known = [m for m in means if m is not None]
        lowest = min(known) if known else None
        cells = ["—" if m is None else (f"**{m:.3f}**" if m == lowest else f"{m:.3f}") for m in means]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def write_confusion_grid(report: SweepReport, path: Path) -> bool:
    """Draw ``report_confusion.png``, a row-normalised confusion matrix per group; False without data."""
    groups, note = ranked_groups(report, MAX_PANELS)
    panels = [(group, matrix) for group in groups if (matrix := pooled_confusion(group)) is not None]
    if not panels:
        return False
    rows, columns = grid_shape(len(panels), PANEL_COLUMNS)
    size = figure_layout(columns, PANEL_IN, rows * PANEL_IN, [])
    with figure_style() as plt:
        fig, axes = plt.subplots(rows, columns, figsize=size.size, squeeze=False, layout="constrained")
        image = None
        for ax, (group, matrix) in zip(axes.flat, panels, strict=False):
            image = ax.imshow(matrix, cmap=COLOR_MAP, vmin=0.0, vmax=1.0)
            ticks = range(matrix.shape[0])
            ax.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
            ax.set_yticks(ticks, [str(t) for t in ticks], fontsize=7)
            ax.set_title(wrap_label(group_label(report, group)))
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.grid(False)
        hide_unused(axes, len(panels))
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="share of the true class")
        details = "; ".join(part for part in (seeds_note(report.groups), note) if part)
        fig.suptitle(f"Test confusion matrices, counts pooled over seeds, rows normalised ({details})")
        save(fig, path)
    return True
