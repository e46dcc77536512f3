"""The lean training-term logging gives the keys and numbers Lightning's per-step ``self.log`` gave."""

from __future__ import annotations

import csv
import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from divergence_lab.methods.training_terms import TrainingTermsLogging

ROWS, FEATURES, BATCH = 70, 3, 8  # 9 batches an epoch, the last one of 6 rows: a batch-size-weighted mean


class Regression(L.LightningModule):
    """Two loss terms of a linear model; ``lean`` logs them with the mixin, otherwise with ``self.log``."""

    def __init__(self, step_values: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(FEATURES, 1)
        self.step_values = step_values
        self.epoch_ends: list[dict[str, float]] = []

    def terms(self, batch):
        x, y = batch
        error = self.net(x).squeeze(1) - y
        return {"loss": error.pow(2).mean(), "mae": error.abs().mean()}

    def training_step(self, batch, batch_idx):
        terms = self.terms(batch)
        for name, value in terms.items():
            options = {"on_epoch": True, "sync_dist": True}
            if self.step_values:
                self.log(f"train/{name}", value.detach(), prog_bar=name == "loss", **options)
            else:
                self.log(f"train/{name}", value.detach(), on_step=False, **options)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self.terms(batch)["loss"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class LeanRegression(TrainingTermsLogging, Regression):
    def __init__(self, step_values: bool = True) -> None:
        super().__init__(step_values)
        self.terms_step_values = step_values

    def training_step(self, batch, batch_idx):
        terms = self.terms(batch)
        self.record_training_terms(terms, batch_size=len(batch[1]))
        return terms["loss"]


class EpochEndMetrics(L.Callback):
    """What callbacks (progress lines, the run summary) read at the end of each training epoch."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


def loaders():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, FEATURES, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(ROWS, generator=generator)
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=BATCH), DataLoader(data, batch_size=32)


def train(module, folder, **trainer_options):
    callback = EpochEndMetrics()
    train_loader, val_loader = loaders()
    options = {"max_epochs": 3, "log_every_n_steps": 4, **trainer_options}
    trainer = L.Trainer(
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(folder, name="", version=""),
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        callbacks=[callback],
        **options,
    )
    trainer.fit(module, train_loader, val_loader)
    with (folder / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    return rows, callback.seen, module.net.weight.detach().clone()


def assert_rows_equal(lean_rows, reference_rows):
    assert len(lean_rows) == len(reference_rows) and lean_rows
    assert set(lean_rows[0]) == set(reference_rows[0])
    for lean, reference in zip(lean_rows, reference_rows, strict=True):
        assert lean.keys() == reference.keys()
        for key, expected in reference.items():
            if expected == "" or key in ("epoch", "step"):
                assert lean[key] == expected, key
            else:
                assert float(lean[key]) == pytest.approx(float(expected), rel=1e-6), key


@pytest.mark.parametrize(
    "trainer_options",
    [{}, {"limit_train_batches": 5}, {"max_steps": 13}, {"val_check_interval": 4}],
    ids=["whole-epochs", "batch-limit", "max-steps-mid-epoch", "validation-inside-epochs"],
)
@pytest.mark.parametrize("step_values", [True, False], ids=["step-and-epoch", "epoch-only"])
def test_lean_logging_writes_what_per_step_logging_wrote(tmp_path, trainer_options, step_values):
    reference = train(Regression(step_values), tmp_path / "reference", **trainer_options)
    reference_rows, reference_seen, reference_weight = reference
    lean = train(LeanRegression(step_values), tmp_path / "lean", **trainer_options)
    lean_rows, lean_seen, lean_weight = lean
    assert torch.equal(lean_weight, reference_weight)
    assert_rows_equal(lean_rows, reference_rows)
    assert len(lean_seen) == len(reference_seen) > 0
    for lean, reference in zip(lean_seen, reference_seen, strict=True):
        assert lean.keys() == reference.keys()
        # the step values callbacks see are those of the last logged step, not of the epoch's last step
        epoch_values = {key: value for key, value in reference.items() if not key.endswith("_step")}
        assert {key: lean[key] for key in epoch_values} == pytest.approx(epoch_values, rel=1e-6)
    expected_keys = {"train/loss_epoch", "train/loss_step"} if step_values else {"train/loss"}
    assert expected_keys <= set(reference_rows[0])


def test_the_epoch_value_is_the_batch_size_weighted_mean(tmp_path):
    module = LeanRegression()
    losses: list[tuple[float, int]] = []
    original = module.terms

    def recording_terms(batch):
        terms = original(batch)
        losses.append((float(terms["loss"].detach()), len(batch[1])))
        return terms

    module.terms = recording_terms
    rows, seen, _ = train(module, tmp_path, max_epochs=1, limit_val_batches=0)
    weighted = sum(v * n for v, n in losses) / sum(n for _, n in losses)
    assert not math.isclose(weighted, sum(v for v, _ in losses) / len(losses), rel_tol=1e-4)
    assert seen[0]["train/loss"] == pytest.approx(weighted, rel=1e-6)
    epoch_rows = [row for row in rows if row.get("train/loss_epoch")]
    assert float(epoch_rows[0]["train/loss_epoch"]) == pytest.approx(weighted, rel=1e-6)


def test_epoch_sums_fold_many_steps_and_term_sets_into_weighted_means():
    """Across several folds (more steps than FOLD_EVERY) and two sets of term names, each term's mean is
    its float64 batch-size-weighted mean over the batches that had it."""
    from divergence_lab.methods.training_terms import FOLD_EVERY, EpochSums

    generator = torch.Generator().manual_seed(0)
    sums = EpochSums(epoch=0)
    expected: dict[str, list[tuple[float, int]]] = {"loss": [], "kd": [], "ler": []}
    for step in range(2 * FOLD_EVERY + 37):
        names = ("loss", "kd", "ler") if step % 3 == 0 else ("loss", "kd")
        values = tuple(torch.rand((), generator=generator) for _ in names)
        size = int(torch.randint(1, 65, (), generator=generator))
        sums.add(names, values, size)
        for name, value in zip(names, values, strict=True):
            expected[name].append((float(value), size))
    means: dict[str, list[tuple[float, int]]] = {}
    for names, values, count in sums.hand_over():
        for name, value in zip(names, values.tolist(), strict=True):
            means.setdefault(name, []).append((value, count))
    for name, pairs in expected.items():
        reference = sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
        combined = sum(v * n for v, n in means[name]) / sum(n for _, n in means[name])
        assert combined == pytest.approx(reference, rel=1e-6)
    assert sums.hand_over() == []  # everything was handed over
