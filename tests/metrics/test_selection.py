"""The checkpoint-selection rule on synthetic sequences of epochs: the best metric, then the tie-break."""

import math

import pytest

from divergence_lab.metrics.selection import SelectionRule, compare, select_epoch

# val/acc ties at 0.9 in epochs 2, 4 and 5 (1-based); val/nll is lowest among them in epoch 4
EPOCHS = [
    {"val/acc": 0.80, "val/nll": 0.50},
    {"val/acc": 0.90, "val/nll": 0.40},
    {"val/acc": 0.85, "val/nll": 0.10},  # the lowest nll overall, but not a best-accuracy epoch
    {"val/acc": 0.90, "val/nll": 0.30},
    {"val/acc": 0.90, "val/nll": 0.35},
    {"val/acc": 0.70, "val/nll": 0.90},
]


def brute_force(epochs, metric, tie_break):
    """An independent statement of the rule: sort keys, each by its direction; earliest among full ties."""
    sign = {"val/acc": -1.0, "val/nll": 1.0, "val/ece": 1.0}
    candidates = range(len(epochs))
    best = min(sign[metric] * epochs[i][metric] for i in candidates)
    tied = [i for i in candidates if sign[metric] * epochs[i][metric] == best]
    if tie_break == "first":
        return tied[0] + 1
    if tie_break == "last":
        return tied[-1] + 1
    best_tie = min(sign[tie_break] * epochs[i][tie_break] for i in tied)
    return next(i for i in tied if sign[tie_break] * epochs[i][tie_break] == best_tie) + 1


@pytest.mark.parametrize(("tie_break", "expected"), [("first", 2), ("last", 5), ("val/nll", 4)])
def test_ties_of_the_best_accuracy_go_to_the_declared_rule(tie_break, expected):
    rule = SelectionRule("val/acc", tie_break)
    assert select_epoch(rule, EPOCHS) == expected == brute_force(EPOCHS, "val/acc", tie_break)


def test_a_secondary_metric_never_overrides_a_better_primary_value():
    # epoch 3 has the lowest nll of all, but a lower accuracy: never selected
    assert select_epoch(SelectionRule("val/acc", "val/nll"), EPOCHS) != 3
    # with nll as the selection metric, the lowest nll wins whatever the accuracy
    assert select_epoch(SelectionRule("val/nll", "val/acc"), EPOCHS) == 3


def test_a_secondary_metric_is_taken_in_its_own_direction():
    epochs = [
        {"val/nll": 0.2, "val/acc": 0.5},
        {"val/nll": 0.2, "val/acc": 0.7},
        {"val/nll": 0.3, "val/acc": 1},
    ]
    assert select_epoch(SelectionRule("val/nll", "val/acc"), epochs) == 2  # the higher accuracy among ties


def test_full_ties_keep_the_earliest_epoch_and_the_metric_as_its_own_tie_break_is_first():
    epochs = [{"val/acc": 0.9, "val/nll": 0.3}, {"val/acc": 0.9, "val/nll": 0.3}]
    assert select_epoch(SelectionRule("val/acc", "val/nll"), epochs) == 1
    same = SelectionRule("val/nll", "val/nll")
    assert same.position == "first" and same.tie_metric is None
    assert select_epoch(same, epochs) == 1


@pytest.mark.parametrize("seed", range(20))
def test_random_sequences_with_many_ties_agree_with_the_brute_force_statement(seed):
    import random

    draw = random.Random(seed)
    epochs = [
        {"val/acc": draw.choice([0.5, 0.6, 0.7]), "val/nll": draw.choice([0.1, 0.2])} for _ in range(12)
    ]
    for tie_break in ("first", "last", "val/nll"):
        expected = brute_force(epochs, "val/acc", tie_break)
        assert select_epoch(SelectionRule("val/acc", tie_break), epochs) == expected


def test_nan_is_worse_than_any_number():
    assert compare("val/acc", 0.1, math.nan) == 1 and compare("val/nll", 5.0, math.nan) == 1
    assert compare("val/acc", math.nan, 0.1) == -1 and compare("val/acc", math.nan, math.nan) == 0
    epochs = [{"val/acc": math.nan, "val/nll": 0.1}, {"val/acc": 0.2, "val/nll": math.nan}]
    assert select_epoch(SelectionRule("val/acc", "val/nll"), epochs) == 2
    tied = [{"val/acc": 0.2, "val/nll": math.nan}, {"val/acc": 0.2, "val/nll": 0.4}]
    assert select_epoch(SelectionRule("val/acc", "val/nll"), tied) == 2


def test_the_rule_is_described_in_one_line():
    assert SelectionRule("val/acc", "val/nll").describe() == "best val/acc, ties by lowest val/nll"
    assert SelectionRule("val/nll", "val/acc").describe() == "best val/nll, ties by highest val/acc"
    assert SelectionRule("val/acc", "first").describe() == "best val/acc, ties by first epoch"
    assert SelectionRule("val/acc", "last").describe() == "best val/acc, ties by last epoch"
