"""Per-epoch curves of a sweep, averaged over seeds: the GCD Old / New / All accuracy on D_u.

Jobs of GCD methods leave ``gcd_curve.json`` (one row per epoch). ``dlab-report`` draws one panel per
quantity (Old, New, All), one line per group (mean over seeds, band = ± std) into ``report_curves.png``:
the analogue of LegoGCD's Figure 1, where SimGCD's Old accuracy drifts down late in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

CURVE_FILE = "gcd_curve.json"
PANELS = (("acc_old", "Old"), ("acc_new", "New"), ("acc_all", "All"))


def group_curves(jobs: list[Path]) -> dict[str, np.ndarray] | None:
    """``{"epoch": (E,), "acc_old": (seeds, E), ...}`` over the jobs that wrote a curve (common epochs)."""
    curves = [json.loads((job / CURVE_FILE).read_text()) for job in jobs if (job / CURVE_FILE).is_file()]
    curves = [curve for curve in curves if curve]
    if not curves:
        return None
    length = min(len(curve) for curve in curves)
    out = {"epoch": np.array([row["epoch"] for row in curves[0][:length]])}
    for key, _ in PANELS:
        out[key] = np.array([[row[key] for row in curve[:length]] for curve in curves])
    return out


def write_curve_grid(groups: list[tuple[str, Any]], path: Path) -> dict[str, dict[str, float]] | None:
    """Draw the panels for ``[(label, jobs)]``; return each group's final-epoch mean Old/New/All, or None."""
    data = [(label, curves) for label, jobs in groups if (curves := group_curves(jobs)) is not None]
    if not data:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4), squeeze=False)
    finals: dict[str, dict[str, float]] = {}
    for ax, (key, title) in zip(axes[0], PANELS, strict=True):
        for label, curves in data:
            mean, std = curves[key].mean(0), curves[key].std(0)
            (line,) = ax.plot(curves["epoch"], mean, label=f"{label} (n={len(curves[key])})")
            ax.fill_between(curves["epoch"], mean - std, mean + std, color=line.get_color(), alpha=0.15)
            finals.setdefault(label, {})[key] = float(mean[-1])
        ax.set(title=f"{title} classes", xlabel="epoch", ylabel="clustering accuracy on D_u")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return finals
