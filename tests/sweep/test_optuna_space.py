"""The search space of an Optuna study: each form of Hydra's override grammar gives its distribution."""

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from divergence_lab.sweep.optuna_space import SearchSpaceError, parse_search_space


@pytest.mark.parametrize(
    ("expression", "distribution"),
    [
        ("interval(0.1, 1.0)", FloatDistribution(0.1, 1.0)),
        ("interval(1, 8)", IntDistribution(1, 8)),  # bounds written as integers: an integer dimension
        ("interval(1.0, 8.0)", FloatDistribution(1.0, 8.0)),
        ("interval(1, 8.5)", FloatDistribution(1.0, 8.5)),
        ("interval(start=2, end=6)", IntDistribution(2, 6)),
        ("tag(log, interval(1e-4, 1e-1))", FloatDistribution(1e-4, 1e-1, log=True)),
        ("tag(log, interval(1, 1024))", IntDistribution(1, 1024, log=True)),
        ("range(1, 10, step=2)", IntDistribution(1, 9, step=2)),  # stop excluded, as in Hydra's range
        ("range(0, 5)", IntDistribution(0, 4)),
        ("range(0.5, 2.0, 0.5)", FloatDistribution(0.5, 1.5, step=0.5)),
        ("choice(kl, rkl, js)", CategoricalDistribution(["kl", "rkl", "js"])),
        ("kl,rkl", CategoricalDistribution(["kl", "rkl"])),
        ("choice(1, 2.5, true)", CategoricalDistribution([1, 2.5, True])),
    ],
)
def test_each_search_form_becomes_its_optuna_distribution(expression, distribution):
    space = parse_search_space({"x": expression}, [])
    assert space.distributions == {"x": distribution}
    assert space.fixed == {}


def test_fixed_values_go_to_every_trial_and_the_command_line_wins():
    space = parse_search_space(
        {"method.alpha": "interval(0.1, 1.0)", "divergence": "choice(kl, rkl)", "seed": 3},
        ["divergence=js", "method.alpha=interval(0.2, 0.5)", "trainer.max_epochs=1", "+extra=on"],
    )
    assert space.distributions == {"method.alpha": FloatDistribution(0.2, 0.5)}
    assert space.fixed == {
        "seed": "seed=3",
        "divergence": "divergence=js",
        "trainer.max_epochs": "trainer.max_epochs=1",
        "+extra": "+extra=on",
    }
    assert space.trial_overrides({"method.alpha": 0.3}) == [
        "seed=3",
        "divergence=js",
        "trainer.max_epochs=1",
        "+extra=on",
        "method.alpha=0.3",
    ]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("glob(*)", "Optuna cannot sample this sweep"),
        ("interval(1.0, 0.1)", "is empty or reversed"),
        ("tag(log, interval(0.0, 1.0))", "a log interval needs low > 0"),
        ("range(5, 1)", "is empty"),
    ],
)
def test_a_dimension_optuna_cannot_sample_is_refused_in_one_line(expression, message):
    with pytest.raises(SearchSpaceError, match=message) as error:
        parse_search_space({"x": expression}, [])
    assert "\n" not in str(error.value) and f"x={expression}" in str(error.value)
