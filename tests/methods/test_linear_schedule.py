"""``scheduler: linear``: the learning rate of every optimiser step against Hugging Face's
``get_linear_schedule_with_warmup`` formula, in a real Lightning run, and its config checks."""

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from divergence_lab.config.checks import check_optimizer
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.classifier import make_optimizer
from divergence_lab.methods.cross_entropy import CrossEntropyModule
from tests.conftest import compose_config

LR = 0.05


def hf_linear_rate(step: int, total: int, warmup: int) -> float:
    """``get_linear_schedule_with_warmup`` (transformers) times the base rate, written out: ``lr·s/w`` while
    ``s < w``, then ``lr·max(0, (S − s)/(S − w))``."""
    if step < warmup:
        return LR * float(step) / float(max(1, warmup))
    return LR * max(0.0, float(total - step) / float(max(1, total - warmup)))


class RateRecorder(L.Callback):
    """The rate each optimiser step is taken with (by 0-based step), and the rate after the last one."""

    def __init__(self) -> None:
        self.used: dict[int, float] = {}
        self.after_training: float | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.used[trainer.global_step] = optimizer.param_groups[0]["lr"]

    def on_train_end(self, trainer, pl_module) -> None:
        self.after_training = trainer.optimizers[0].param_groups[0]["lr"]


def run_tiny(warmup: int, epochs: int, batches: int, accumulate: int = 1) -> RateRecorder:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(batches * 4, 5), torch.randint(0, 3, (batches * 4,)))
    optimizer = {"name": "sgd", "lr": LR, "scheduler": "linear", "warmup_steps": warmup}
    module = CrossEntropyModule(nn.Linear(5, 3), 3, optimizer, epochs)
    recorder = RateRecorder()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        accumulate_grad_batches=accumulate,
        callbacks=[recorder],
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader(data, batch_size=4))
    return recorder


@pytest.mark.parametrize(
    "warmup, epochs, batches, accumulate, total",
    [(0, 3, 4, 1, 12), (5, 3, 4, 1, 12), (2, 2, 5, 2, 6)],  # 5 batches / 2 accumulated: 3 steps an epoch
)
def test_every_step_takes_the_hugging_face_rate_and_the_last_leaves_it_at_zero(
    warmup, epochs, batches, accumulate, total
):
    recorder = run_tiny(warmup, epochs, batches, accumulate)
    assert sorted(recorder.used) == list(range(total))
    for step, rate in recorder.used.items():
        assert rate == pytest.approx(hf_linear_rate(step, total, warmup), rel=1e-12, abs=1e-15)
    assert recorder.used[total - 1] == pytest.approx(LR / (total - warmup))  # the last step's rate
    assert recorder.after_training == 0.0


def test_the_schedule_is_a_per_step_lambda_over_the_given_total():
    linear = {"name": "adam", "lr": LR, "scheduler": "linear"}
    built = make_optimizer(nn.Linear(2, 2).parameters(), linear, max_epochs=3, total_steps=7)
    assert built["lr_scheduler"]["interval"] == "step"
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([hf_linear_rate(s, 7, 0) for s in range(8)])
    assert rates[-1] == 0.0


def test_a_method_that_gives_no_step_count_refuses_the_linear_schedule_in_one_line():
    with pytest.raises(ConfigError, match="scheduler=linear needs the run's number of optimiser steps"):
        make_optimizer(nn.Linear(2, 2).parameters(), {"name": "adam", "lr": LR, "scheduler": "linear"}, 3)


@pytest.mark.parametrize(
    "update, message",
    [
        ({"scheduler": "linearr"}, "scheduler must be one of none, cosine, step, linear"),
        ({"scheduler": "linear", "warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"scheduler": "linear", "warmup_steps": 2.5}, "warmup_steps must be an integer >= 0"),
        ({"scheduler": "cosine", "warmup_steps": 10}, "warmup_steps=10 is read only by scheduler=linear"),
    ],
)
def test_bad_linear_settings_are_refused_in_one_line(update, message):
    with pytest.raises(ConfigError, match=f"method.optimizer.{message}"):
        check_optimizer({"name": "adamw", "lr": 2e-5, **update}, "method.optimizer")


def test_the_linear_schedule_and_its_warm_up_pass_the_config_checks():
    for warmup in (0, 30):
        linear = {"name": "adamw", "lr": 2e-5, "scheduler": "linear", "warmup_steps": warmup}
        check_optimizer(linear, "method.optimizer")
    cfg = compose_config(["experiment=sinkd_glue"])
    assert cfg.method.optimizer.scheduler == "linear" and cfg.method.teacher.optimizer.scheduler == "linear"
