"""Metrics against a numeric sweep key (density, label noise, temperature ...): one line per group of the
other varying keys, error bars = std over seeds, drawn by ``dlab-report`` into ``report_lines.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def numeric_key(varying: list[str], groups: list[Any]) -> str | None:
    """The last varying key whose values are all numbers (None when there is none)."""
    for key in reversed(varying):
        try:
            [float(dict(group.key)[key]) for group in groups if key in dict(group.key)]
        except ValueError:
            continue
        return key
    return None


def write_line_plot(report: Any, path: Path) -> str | None:
    """Draw one panel per metric against the numeric varying key; return that key, or None (no plot)."""
    x_key = numeric_key(report.varying, report.groups)
    if x_key is None or len(report.varying) < 1:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines: dict[str, list[tuple[float, Any]]] = {}
    for group in report.groups:
        values = dict(group.key)
        hue = ", ".join(f"{k}={values[k]}" for k in report.varying if k != x_key and k in values) or "all"
        lines.setdefault(hue, []).append((float(values[x_key]), group))
    xs = sorted({x for points in lines.values() for x, _ in points})
    columns = min(3, len(report.metrics))
    rows = -(-len(report.metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(report.metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, report.metrics, strict=False):
        for hue, points in lines.items():
            points.sort(key=lambda point: point[0])
            stats = [group.summary(metric) for _, group in points]
            ax.errorbar(
                [x for x, _ in points], [m for m, _ in stats], yerr=[s for _, s in stats],
                marker="o", markersize=3, capsize=3, label=hue,
            )  # fmt: skip
        if xs and xs[0] > 0 and xs[-1] / xs[0] >= 10:
            ax.set_xscale("log")
        ax.set(title=metric, xlabel=x_key)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return x_key
