"""The report as figures: ``report.png`` (a bar chart per metric) and ``report_reliability.png``
(one reliability diagram per group, pooled over seeds)."""

from __future__ import annotations

import json
from pathlib import Path

from divergence_lab.report.collect import Group, SweepReport


def pooled_reliability(group: Group) -> dict[str, dict[str, list[float] | float]]:
    """Reliability bins of each evaluated network, pooled over the group's seeds (``reliability.json``).

    Pooling sums the counts and count-weights the per-bin confidence and accuracy; the ECE shown is that
    of the pooled predictions.
    """
    pooled: dict[str, dict] = {}
    for job in group.jobs:
        path = job / "reliability.json"
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


def write_reliability_grid(report: SweepReport, path: Path) -> bool:
    """One reliability panel per group (all evaluated networks, pooled over seeds); False if no data."""
    curves = [(group.label(report.varying), pooled_reliability(group)) for group in report.groups]
    curves = [(label, pooled) for label, pooled in curves if pooled]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(curves))
    rows = -(-len(curves) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(curves) :]:
        ax.axis("off")
    for ax, (label, pooled) in zip(axes.flat, curves, strict=False):
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        for network, bins in pooled.items():
            points = [
                (c, a)
                for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"], strict=True)
                if n
            ]
            ax.plot(*zip(*points, strict=True), "o-", markersize=3, label=f"{network}  ECE={bins['ece']:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=label)
        ax.title.set_fontsize(8)
        ax.legend(loc="upper left", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("confidence")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.suptitle("reliability (15 bins, pooled over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _bar_layout(report: SweepReport) -> tuple[list[str], list[str], dict[tuple[str, str], Group]]:
    """x categories (values of the last varying key), hues (the other varying keys), and the cell groups."""
    x_key = report.varying[-1] if report.varying else None
    categories: list[str] = []
    hues: list[str] = []
    cells: dict[tuple[str, str], Group] = {}
    for group in report.groups:
        values = dict(group.key)
        category = values.get(x_key, "all runs") if x_key else "all runs"
        hue = ", ".join(f"{k}={values[k]}" for k in report.varying[:-1] if k in values)
        categories += [category] if category not in categories else []
        hues += [hue] if hue not in hues else []
        cells[(category, hue)] = group
    return categories, hues, cells


def write_plot(report: SweepReport, path: Path) -> None:
    """Bar chart per metric (error bars = std); a second varying key becomes coloured, side-by-side bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories, hues, cells = _bar_layout(report)
    columns = min(3, len(report.metrics))
    rows = -(-len(report.metrics) // columns)
    width = max(4.0, 0.35 * len(categories) * len(hues) + 1.5)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(report.metrics) :]:
        ax.axis("off")
    bar = 0.8 / len(hues)
    for ax, metric in zip(axes.flat, report.metrics, strict=False):
        lows, highs = [], []
        for h, hue in enumerate(hues):
            stats = [
                cells[(c, hue)].summary(metric) if (c, hue) in cells else (float("nan"), 0.0)
                for c in categories
            ]
            means, stds = zip(*stats, strict=True)
            offsets = [i - 0.4 + bar * (h + 0.5) for i in range(len(categories))]
            ax.bar(offsets, means, width=bar, yerr=stds, capsize=3, alpha=0.85, label=hue or None)
            lows += [m - s for m, s in stats if m == m]
            highs += [m + s for m, s in stats if m == m]
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        ax.set_title(metric)
        if lows and metric.endswith("acc"):
            ax.set_ylim(max(0.0, min(lows) - 0.03), min(1.0, max(highs) + 0.01))
        ax.grid(axis="y", alpha=0.3)
    if len(hues) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        f"{report.sweep_dir.parent.name}/{report.sweep_dir.name}  (mean ± std over seeds)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
