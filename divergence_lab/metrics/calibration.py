"""Reliability diagrams: how far a network's confidence is from its accuracy.

Predictions are put into ``n_bins`` equal-width bins of confidence ``max_k p_k``; for each bin the
diagram shows the accuracy against the mean confidence. The expected calibration error is
``ECE = sum_b (n_b / N) |acc_b - conf_b|`` (the same definition as ``test/ece``). After testing, the
:class:`ReliabilityDiagram` callback writes ``reliability.png`` and ``reliability.json`` into the run
directory, one curve per evaluated network (the trained network, and e.g. the online teacher).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

RELIABILITY_FIGURE_FILE = "reliability.png"  # in the run folder, drawn after testing


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Any]:
    """Per-bin mean confidence, accuracy and count, plus the ECE; ``probs`` is (N, C), ``labels`` (N,)."""
    confidence, prediction = probs.max(dim=-1)
    correct = (prediction == labels).to(probs.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=probs.dtype)
    # bin b holds confidences in (edges[b], edges[b+1]]
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).to(probs.dtype)
    conf_sum = torch.zeros(n_bins, dtype=probs.dtype).index_add_(0, index, confidence)
    acc_sum = torch.zeros(n_bins, dtype=probs.dtype).index_add_(0, index, correct)
    safe = count.clamp_min(1)
    ece = ((acc_sum - conf_sum).abs().sum() / len(labels)).item()
    return {
        "edges": edges.tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (acc_sum / safe).tolist(),
        "count": count.long().tolist(),
        "ece": ece,
    }


def plot_reliability(curves: dict[str, dict[str, Any]], path: Path, title: str = "") -> None:
    """One panel per network: accuracy per confidence bin as bars, the diagonal, and the ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.6), squeeze=False)
    for ax, (name, bins) in zip(axes[0], curves.items(), strict=True):
        edges = bins["edges"]
        width = edges[1] - edges[0]
        filled = [i for i, n in enumerate(bins["count"]) if n > 0]
        ax.bar(
            [edges[i] for i in filled],
            [bins["accuracy"][i] for i in filled],
            width=width,
            align="edge",
            edgecolor="black",
            color="tab:blue",
            alpha=0.8,
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        ax.scatter(
            [bins["confidence"][i] for i in filled],
            [bins["accuracy"][i] for i in filled],
            s=10,
            color="tab:red",
            zorder=3,
            label="(mean conf., acc.)",
        )
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=f"{name}  ECE={bins['ece']:.3f}",
        )
        ax.legend(loc="lower right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class ReliabilityDiagram(Callback):
    """Collect the test probabilities that ``test_step`` returns and draw the diagram at the end."""

    def __init__(self, run_dir: Path, title: str = "", n_bins: int = 15) -> None:
        self.run_dir = Path(run_dir)
        self.title = title
        self.n_bins = n_bins
        self.probs: dict[str, list[Tensor]] = {}
        self.labels: list[Tensor] = []

    def on_test_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self.probs, self.labels = {}, []

    def on_test_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return  # a method without class probabilities aligned to labels (e.g. clustering in GCD)
        for prefix, probs in outputs["probs"].items():
            self.probs.setdefault(prefix, []).append(probs.detach().cpu())
        self.labels.append(outputs["y"].detach().cpu())

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        if not self.labels:
            return
        labels = torch.cat(self.labels)
        curves = {
            (prefix.rstrip("_") or "model"): reliability_bins(torch.cat(chunks).double(), labels, self.n_bins)
            for prefix, chunks in self.probs.items()
        }
        (self.run_dir / "reliability.json").write_text(json.dumps(curves, indent=1))
        plot_reliability(curves, self.run_dir / RELIABILITY_FIGURE_FILE, self.title)
