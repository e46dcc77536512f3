"""``epoch_curves.png``: one run's per-epoch curves, drawn at its end for its W&B run.

One panel per quantity the run's CSV log holds per epoch (:mod:`divergence_lab.ground.epoch_log`,
epochs counted from 1): the training loss (the epoch mean ``train/loss``) first, then every ``val/*``
metric in name order. The epoch whose checkpoint was tested (``selected_epoch`` of ``metrics.json``) is a
dotted vertical line in every panel, so the tested state can be read off each curve. A run that logged no
per-epoch value draws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from divergence_lab.ground.epoch_log import EpochValues, read_epoch_metrics

EPOCH_FIGURE_FILE = "epoch_curves.png"
TRAINING_LOSS = "train/loss"
VALIDATION_PREFIX = "val/"
PANEL_COLUMNS = 3
PANEL_SIZE_IN = (3.4, 2.6)
DPI = 110


def curve_metrics(curves: dict[str, EpochValues]) -> list[str]:
    """The quantities drawn, in panel order: ``train/loss`` (where logged), then the ``val/*`` metrics."""
    validation = sorted(name for name in curves if name.startswith(VALIDATION_PREFIX))
    return [TRAINING_LOSS] * (TRAINING_LOSS in curves) + validation


def epoch_figure(curves: dict[str, EpochValues], title: str, selected_epoch: int | None) -> Any:
    """The matplotlib figure of ``curves`` (one titled panel per :func:`curve_metrics` entry, the tested
    epoch marked); None when there is nothing to draw."""
    names = curve_metrics(curves)
    if not names:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(PANEL_COLUMNS, len(names))
    rows = -(-len(names) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(PANEL_SIZE_IN[0] * columns, PANEL_SIZE_IN[1] * rows), squeeze=False
    )
    for ax, name in zip(axes.flat, names, strict=False):
        epochs = sorted(curves[name])
        ax.plot(epochs, [curves[name][epoch] for epoch in epochs], marker="o", markersize=3)
        if selected_epoch is not None:
            ax.axvline(selected_epoch, linestyle=":", color="gray", label=f"tested: epoch {selected_epoch}")
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    if selected_epoch is not None:
        axes.flat[0].legend(loc="best", fontsize=7)  # one legend: the line means the same in every panel
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_epoch_figure(run_dir: Path, title: str, selected_epoch: int | None) -> Path | None:
    """Draw the run's per-epoch curves into ``run_dir/epoch_curves.png``; its path, or None without curves."""
    fig = epoch_figure(read_epoch_metrics(run_dir), title, selected_epoch)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    path = run_dir / EPOCH_FIGURE_FILE
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
