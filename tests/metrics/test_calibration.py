"""Reliability bins agree with torchmetrics' calibration error and with a hand-computed case."""

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from divergence_lab.metrics.calibration import plot_reliability, reliability_bins


def test_ece_from_bins_matches_torchmetrics():
    torch.manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 10, dtype=torch.float64), -1)
    labels = torch.randint(0, 10, (500,))
    bins = reliability_bins(probs, labels, n_bins=15)
    expected = multiclass_calibration_error(probs.float(), labels, num_classes=10, n_bins=15, norm="l1")
    assert bins["ece"] == pytest.approx(expected.item(), abs=1e-6)
    assert sum(bins["count"]) == 500


def test_hand_computed_bins():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    bins = reliability_bins(probs, labels, n_bins=2)  # bins (0, 0.5], (0.5, 1]: every confidence is > 0.5
    assert bins["count"] == [0, 4]
    assert bins["confidence"][1] == pytest.approx((0.9 + 0.8 + 0.7 + 0.55) / 4)
    assert bins["accuracy"][1] == pytest.approx(0.5)
    assert bins["ece"] == pytest.approx(abs(0.5 - 0.7375))


def test_plot_writes_a_png(tmp_path):
    probs = torch.softmax(torch.randn(50, 3, dtype=torch.float64), -1)
    curves = {
        "model": reliability_bins(probs, torch.randint(0, 3, (50,))),
        "teacher": reliability_bins(probs, torch.zeros(50, dtype=torch.long)),
    }
    plot_reliability(curves, tmp_path / "r.png", "title")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
