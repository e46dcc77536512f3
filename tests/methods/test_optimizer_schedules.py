"""``make_optimizer``: cosine floor, step schedule and weight-decay groups, against their formulas."""

import math

import pytest
import torch
from torch import nn

from divergence_lab.config.checks import check_optimizer
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.classifier import make_optimizer


def learning_rates(optimizer_cfg: dict, epochs: int) -> list[float]:
    built = make_optimizer(nn.Linear(3, 2).parameters(), optimizer_cfg, epochs)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_ends_at_its_floor():
    config = {"name": "sgd", "lr": 0.1, "scheduler": "cosine", "min_lr_factor": 1e-3}
    rates = learning_rates(config, 200)
    floor = 0.1 * 1e-3
    for epoch in (0, 50, 137, 199):
        expected = floor + (0.1 - floor) * (1 + math.cos(math.pi * epoch / 200)) / 2
        assert rates[epoch] == pytest.approx(expected, rel=1e-9)


def test_step_schedule_divides_the_rate_at_each_milestone():
    config = {"name": "sgd", "lr": 0.1, "scheduler": "step", "milestones": [80, 120], "gamma": 0.1}
    rates = learning_rates(config, 160)
    assert rates[79] == pytest.approx(0.1) and rates[80] == pytest.approx(0.01)
    assert rates[119] == pytest.approx(0.01) and rates[120] == pytest.approx(0.001)


def test_one_dimensional_parameters_get_no_weight_decay():
    net = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3))
    config = {"name": "sgd", "lr": 0.1, "weight_decay": 0.5, "no_decay_1d": True}
    optimizer = make_optimizer(net.parameters(), config, 1)
    decayed, plain = optimizer.param_groups
    assert [p.shape for p in decayed["params"]] == [torch.Size([3, 4])] and decayed["weight_decay"] == 0.5
    assert len(plain["params"]) == 3 and plain["weight_decay"] == 0.0  # linear bias, norm weight and bias


@pytest.mark.parametrize(
    "update, message",
    [
        ({"scheduler": "step"}, "milestones must be a non-empty list"),
        ({"scheduler": "step", "milestones": [120, 80]}, "milestones must be increasing integers"),
        ({"scheduler": "step", "milestones": [80], "gamma": 0.0}, r"gamma must be a number in \(0, 1\]"),
        ({"scheduler": "cosine", "min_lr_factor": 2.0}, r"min_lr_factor must be a number in \[0, 1\]"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(update, message):
    with pytest.raises(ConfigError, match=f"method.optimizer.{message}"):
        check_optimizer({"name": "sgd", "lr": 0.1, **update}, "method.optimizer")
