"""``method.eval_every_steps``: test evaluations every k optimiser steps and their optimistic best.

Each recorded accuracy is checked against an independent evaluation of the network at that step, the
logged metric against the maximum, the evaluations against the run they ride on (same weights with or
without them), and the checkpoint merge; then the real pipeline with KD, on and off.
"""

import json

import lightning as L
import pytest
import torch

from divergence_lab import divergences
from divergence_lab.config.checks import validate_settings
from divergence_lab.data import instantiate_datamodule
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.kd import DistillationModule
from divergence_lab.metrics.best_of_evals import BestOfEvaluations
from divergence_lab.metrics.names import BEST_OF_EVALS_ACC
from divergence_lab.models.mlp import MLP
from tests.conftest import compose_config, run_training

OPTIMIZER = {"name": "adam", "lr": 3e-3, "weight_decay": 0.0, "scheduler": "none"}
EVERY = 7  # digits: 20 training batches an epoch, so evaluations fall inside and across epochs


class IndependentAccuracy(L.Callback):
    """After every optimiser step that is a multiple of ``every``: the student's accuracy on the whole test
    split in one batch, computed here without the callback under test (its random streams given back)."""

    def __init__(self, every: int, x: torch.Tensor, y: torch.Tensor) -> None:
        self.every, self.x, self.y = every, x, y
        self.accuracies: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step % self.every or step in self.accuracies:
            return
        student = pl_module.net
        student.eval()
        with torch.no_grad():
            predicted = torch.argmax(student(self.x), dim=1)
        student.train()
        self.accuracies[step] = (predicted == self.y).double().mean().item()


@pytest.fixture(scope="module")
def digits():
    return instantiate_datamodule(compose_config().data, seed=0)


def distillation(digits, eval_every_steps):
    """KD of a dropout MLP (dropout draws from the global random stream) from a fixed random teacher."""
    torch.manual_seed(0)
    teacher = MLP(digits.input_shape, digits.num_classes, hidden=[32])
    student = MLP(digits.input_shape, digits.num_classes, hidden=[32], dropout=0.3)
    return DistillationModule(
        student,
        teacher,
        divergences.build("kl", temperature=4.0),
        0.9,
        digits.num_classes,
        OPTIMIZER,
        2,
        eval_every_steps=eval_every_steps,
    )


def fit(module, digits, *callbacks):
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=digits)
    return trainer


def test_each_evaluation_is_the_accuracy_at_its_step_and_the_logged_metric_their_maximum(digits):
    module = distillation(digits, EVERY)
    x, y = digits.splits["test"].tensors
    reference = IndependentAccuracy(EVERY, x, y)
    trainer = fit(module, digits, reference)
    recorded = module.periodic_evaluation.evaluations
    assert sorted(recorded) == list(range(EVERY, 40 + 1, EVERY))  # 2 epochs × 20 steps
    assert recorded == pytest.approx(reference.accuracies, abs=1e-12)
    (results,) = trainer.test(module, datamodule=digits, verbose=False)
    assert results[BEST_OF_EVALS_ACC] == pytest.approx(max(reference.accuracies.values()), abs=1e-7)


def test_the_evaluations_leave_training_as_it_was(digits):
    with_evaluations, without = distillation(digits, EVERY), distillation(digits, None)
    fit(with_evaluations, digits)
    fit(without, digits)
    for trained, plain in zip(with_evaluations.net.parameters(), without.net.parameters(), strict=True):
        assert torch.equal(trained, plain)
    assert with_evaluations.net.training and not with_evaluations.teacher.training


def test_off_means_no_callback_and_no_metric(digits):
    module = distillation(digits, None)
    assert module.configure_callbacks() == []
    trainer = fit(module, digits)
    (results,) = trainer.test(module, datamodule=digits, verbose=False)
    assert BEST_OF_EVALS_ACC not in results and "test/acc" in results


def test_restoring_an_earlier_checkpoint_keeps_the_later_evaluations():
    callback = BestOfEvaluations(5)
    callback.evaluations = {5: 0.6, 10: 0.7, 15: 0.9}
    earlier = {"evaluations": {5: 0.6, 10: 0.7}}  # the tested checkpoint's state: a prefix of the run's
    callback.load_state_dict(earlier)
    assert callback.evaluations == {5: 0.6, 10: 0.7, 15: 0.9} and callback.best() == (15, 0.9)
    resumed = BestOfEvaluations(5)  # a new process resuming from a checkpoint
    resumed.load_state_dict(callback.state_dict())
    assert resumed.evaluations == callback.evaluations
    assert resumed.due(20) and not resumed.due(15) and not resumed.due(21)


def test_the_pipeline_logs_the_best_of_all_evaluations_and_leaves_the_honest_numbers_alone(tmp_path):
    tiny = ["method=kd", "trainer.max_epochs=2", "method.teacher.max_epochs=1"]
    on, on_dir = run_training(tmp_path, [*tiny, f"method.eval_every_steps={EVERY}"], run_name="on")
    off, _ = run_training(tmp_path, tiny, run_name="off")
    last = torch.load(on_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = [value for key, value in last["callbacks"].items() if "BestOfEvaluations" in key]
    assert len(state["evaluations"]) == 40 // EVERY
    assert on["metrics"][BEST_OF_EVALS_ACC] == pytest.approx(max(state["evaluations"].values()), abs=1e-7)
    assert BEST_OF_EVALS_ACC not in off["metrics"]
    honest = {name: value for name, value in on["metrics"].items() if name != BEST_OF_EVALS_ACC}
    assert honest == off["metrics"]
    assert json.loads((on_dir / "metrics.json").read_text())["metrics"] == on["metrics"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=kd", "method.eval_every_steps=0"], "method.eval_every_steps must be an integer >= 1"),
        (["method=sinkd", "method.eval_every_steps=2.5"], "method.eval_every_steps must be an integer >= 1"),
        (["method=pld", "method.eval_every_steps=5"], "method=pld does not read method.eval_every_steps"),
    ],
)
def test_bad_or_unread_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as refusal:
        validate_settings(compose_config(overrides), overrides)
    assert "\n" not in str(refusal.value)


def test_kd_and_sinkd_accept_it():
    for method in ("kd", "sinkd"):
        overrides = [f"method={method}", "method.eval_every_steps=5"]
        validate_settings(compose_config(overrides), overrides)
