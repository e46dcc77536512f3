"""The tested checkpoint: Lightning training on scripted validation values, ties broken by the declared rule,
the same choice after a resume from last.ckpt, and the config checks of the rule."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from divergence_lab.config.checks import validate_settings
from divergence_lab.ground.errors import ConfigError
from divergence_lab.metrics.selection import SelectionRule
from divergence_lab.run.selection import SelectedCheckpoint, describe_selection, selection_rule
from tests.conftest import compose_config

# 1-based epochs 2, 4 and 5 tie on val/acc = 0.9; their val/nll: 0.4, 0.3, 0.35
SCRIPT = [
    {"val/acc": 0.80, "val/nll": 0.50},
    {"val/acc": 0.90, "val/nll": 0.40},
    {"val/acc": 0.85, "val/nll": 0.10},
    {"val/acc": 0.90, "val/nll": 0.30},
    {"val/acc": 0.90, "val/nll": 0.35},
    {"val/acc": 0.70, "val/nll": 0.90},
]
EXPECTED = {"first": 2, "last": 5, "val/nll": 4}


class Scripted(L.LightningModule):
    """Logs ``SCRIPT[epoch]`` as its validation metrics (only ``logged`` of them); trains one weight."""

    def __init__(self, logged=("val/acc", "val/nll")):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.logged = logged

    def training_step(self, batch, batch_idx):
        return (self.weight - batch[0].mean()).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        for name in self.logged:
            self.log(name, SCRIPT[self.current_epoch][name])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader():
    return DataLoader(TensorDataset(torch.arange(8.0).unsqueeze(1)), batch_size=4)


def fit(tmp_path, rule, max_epochs, resume=False, module=None):
    """Train ``max_epochs`` (resuming from last.ckpt when asked); return the selecting callback."""
    best = SelectedCheckpoint(tmp_path, rule)
    last = ModelCheckpoint(tmp_path, filename="last", enable_version_counter=False)
    trainer = L.Trainer(
        max_epochs=max_epochs,
        callbacks=[best, last],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    checkpoint = str(tmp_path / "last.ckpt") if resume else None
    trainer.fit(module or Scripted(), loader(), loader(), ckpt_path=checkpoint)
    return best


def saved_epoch(path) -> int:
    """The 1-based epoch a Lightning checkpoint holds (Lightning stores the 0-based index)."""
    return torch.load(path, weights_only=False)["epoch"] + 1


@pytest.mark.parametrize("tie_break", list(EXPECTED))
def test_best_checkpoint_is_the_best_accuracy_epoch_chosen_among_ties_by_the_rule(tmp_path, tie_break):
    best = fit(tmp_path, SelectionRule("val/acc", tie_break), max_epochs=len(SCRIPT))
    expected = EXPECTED[tie_break]
    assert best.selected_epoch == expected
    assert saved_epoch(best.best_model_path) == expected
    assert best.selected_validation == pytest.approx(SCRIPT[expected - 1])
    assert best.best_model_score.item() == pytest.approx(0.9)


@pytest.mark.parametrize("tie_break", list(EXPECTED))
def test_a_run_resumed_from_last_ckpt_selects_what_the_uninterrupted_run_selects(tmp_path, tie_break):
    rule = SelectionRule("val/acc", tie_break)
    fit(tmp_path, rule, max_epochs=3)  # stopped after epoch 3: epoch 2 is selected so far
    resumed = fit(tmp_path, rule, max_epochs=len(SCRIPT), resume=True)
    assert resumed.selected_epoch == EXPECTED[tie_break]
    assert saved_epoch(tmp_path / "best.ckpt") == EXPECTED[tie_break]
    assert resumed.selected_validation == pytest.approx(SCRIPT[EXPECTED[tie_break] - 1])


def test_a_missing_tie_break_metric_stops_training_with_one_line(tmp_path):
    with pytest.raises(RuntimeError, match=r"^checkpoint selection needs val/nll every epoch; the method "):
        fit(tmp_path, SelectionRule("val/acc", "val/nll"), max_epochs=1, module=Scripted(logged=("val/acc",)))


def test_the_rule_comes_from_the_config_and_last_epoch_methods_select_none():
    assert selection_rule(compose_config()) == SelectionRule("val/acc", "val/nll")
    assert selection_rule(compose_config(["checkpoint_selection.tie_break=last"])).tie_break == "last"
    gcd = compose_config(["method=legogcd", "data=gcd_digits"])
    assert selection_rule(gcd) is None
    assert describe_selection(None) == "last epoch (method.checkpoint_selection: last)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["checkpoint_selection.tie_break=val/ece"],
            "checkpoint_selection.tie_break=val/ece is not logged by method=kd; choose first, last (epoch) "
            "or one of: val/acc, val/nll",
        ),
        (["method=teacher", "+method.checkpoint_selection=worst"], "method.checkpoint_selection must be"),
    ],
)
def test_a_tie_break_the_method_does_not_log_is_refused_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        validate_settings(compose_config(overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        ["checkpoint_selection.tie_break=first"],
        ["checkpoint_selection.tie_break=last"],
        ["method=bdkd", "checkpoint_selection.tie_break=val/teacher_nll"],
        ["experiment=lm_kd_synthetic"],  # selects on val/exact_match, ties by val/nll
        ["method=legogcd", "data=gcd_digits"],  # tests its last epoch: logs no val/nll, needs none
    ],
)
def test_accepted_selections(overrides):
    validate_settings(compose_config(overrides))


def test_an_override_of_the_tie_break_for_a_last_epoch_method_is_refused():
    overrides = ["method=legogcd", "data=gcd_digits", "checkpoint_selection.tie_break=first"]
    with pytest.raises(ConfigError, match="method=legogcd does not read checkpoint_selection"):
        validate_settings(compose_config(overrides), ["checkpoint_selection.tie_break=first"])
