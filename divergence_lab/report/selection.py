"""Model selection as the runs recorded it, and the noise floor of the test metrics.

Every run writes into ``metrics.json`` the epoch its test metrics come from (``selected_epoch``, counted
from 1), the rule that chose it (``checkpoint_selection``, e.g. ``best val/acc, ties by val/nll``) and the
sizes of its splits (``n_train``, ``n_val``, ``n_test``). The report states them, because a tie on the
validation metric (a few hundred validation examples give few distinct accuracies) decides which epoch is
tested.

The noise floor of a test accuracy on ``n`` examples: one example moves it by ``1 / n``, and the binomial
standard error of an accuracy ``p`` is ``sqrt(p (1 − p) / n)``; differences between divergences smaller
than these are not resolved by the test set, whatever the number of seeds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from divergence_lab.report.metric_info import is_accuracy

SPLITS = ("n_train", "n_val", "n_test")


def _integers(records: list[tuple[Path, dict[str, Any]]], key: str) -> list[int]:
    return [r[key] for _, r in records if isinstance(r.get(key), int) and not isinstance(r.get(key), bool)]


def _span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}–{high}"


def selected_epochs(records: list[tuple[Path, dict[str, Any]]]) -> dict[Path, int]:
    """``job folder -> selected epoch`` for the runs that recorded one."""
    return {job: r["selected_epoch"] for job, r in records if isinstance(r.get("selected_epoch"), int)}


def noise_floor(accuracy: float, n_test: int) -> tuple[float, float]:
    """``(1 / n, sqrt(p (1 − p) / n))``: one test example, and the binomial standard error at ``p``."""
    return 1.0 / n_test, math.sqrt(accuracy * (1.0 - accuracy) / n_test)


def selection_lines(records: list[tuple[Path, dict[str, Any]]], metrics: dict[str, float]) -> list[str]:
    """What the report says about model selection and split sizes; ``metrics`` maps a reported metric to
    its mean over all runs (for the noise floor of accuracies). Empty when no run recorded any of it."""
    lines = []
    rules = sorted({str(r["checkpoint_selection"]) for _, r in records if r.get("checkpoint_selection")})
    epochs = list(selected_epochs(records).values())
    if rules:
        lines.append(f"Checkpoint: {'; '.join(rules)}.")
    if epochs:
        lines.append(f"Selected epochs: {_span(epochs)} (counted from 1; per run in report_seeds.csv).")
    sizes = {key: _integers(records, key) for key in SPLITS}
    if any(sizes.values()):
        shown = ", ".join(f"{key} = {_span(values)}" for key, values in sizes.items() if values)
        lines.append(f"Split sizes: {shown}.")
    if sizes["n_test"]:
        n_test = min(sizes["n_test"])
        for metric, mean in metrics.items():
            if is_accuracy(metric) and metric.startswith("test/") and 0.0 <= mean <= 1.0:
                one, se = noise_floor(mean, n_test)
                lines.append(
                    f"Noise floor of {metric}: one test example = {one:.4f} ({100 * one:.2f} pt); binomial "
                    f"SE at {mean:.4f} = {se:.4f}."
                )
    return lines
