"""Generation metrics: pass@k against brute-force enumeration, and every answer metric on hand cases."""

import itertools
import math
from fractions import Fraction

import pytest

from divergence_lab.metrics.generation import (
    answer_metrics,
    empirical_entropy,
    extract_answer,
    pass_at_k,
    uniform_answer_entropy,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The fraction of all k-subsets of n samples (the first c correct) holding a correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(index < c for index in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_the_enumeration_of_every_k_subset(n: int) -> None:
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 0, 1, 0.0),
        (10, 10, 1, 1.0),
        (10, 5, 1, 0.5),
        (4, 1, 2, 0.5),  # 1 - C(3, 2) / C(4, 2) = 1 - 3/6
        (5, 3, 3, 1.0),  # n - c < k: every 3-subset holds a correct sample
        (200, 1, 100, 0.5),  # 1 - C(199, 100) / C(200, 100) = 1 - 100/200
    ],
)
def test_pass_at_k_hand_cases(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_many_samples() -> None:
    n, c, k = 1000, 7, 300  # C(1000, 300) has about 263 digits: far beyond a float
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize(
    "n, c, k, message", [(8, 2, 16, "1 <= k <= n"), (4, 5, 1, "0 <= c <= n"), (4, 1, 0, "k=0")]
)
def test_pass_at_k_refuses_impossible_arguments_in_one_line(n: int, c: int, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        pass_at_k(n, c, k)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text, eos, expected",
    [
        ("42", None, "42"),
        (" 42 \nmore", None, "42"),
        ("7<eos>8", "<eos>", "7"),
        ("\n9", None, ""),
        ("", None, ""),
    ],
)
def test_an_answer_is_the_first_line_up_to_eos_stripped(text: str, eos: str | None, expected: str) -> None:
    assert extract_answer(text, eos) == expected


def test_empirical_entropy_in_nats() -> None:
    assert empirical_entropy(["a", "a", "a"]) == 0.0
    assert empirical_entropy(["a", "b"]) == pytest.approx(math.log(2))
    assert empirical_entropy(["a", "a", "b", "c"]) == pytest.approx(1.5 * math.log(2))
    assert uniform_answer_entropy([frozenset({"a", "b"}), frozenset({"c"})]) == pytest.approx(math.log(2) / 2)


def test_answer_metrics_on_a_hand_case() -> None:
    samples = [["a", "a", "b", "x"], ["7\nextra", " 8 ", "7", "9"]]
    greedy = ["a", "8"]
    answers = [frozenset({"a", "b"}), frozenset({"7"})]
    metrics = answer_metrics(samples, greedy, answers, ks=(1, 2, 4), split="test")
    assert metrics == pytest.approx(
        {
            "test/exact_match": 0.5,
            "test/pass@1": (3 / 4 + 2 / 4) / 2,
            "test/pass@2": (1 + (1 - 1 / 6)) / 2,  # second prompt: 1 - C(2, 2) / C(4, 2)
            "test/pass@4": 1.0,
            "test/distinct_correct": (2 + 1) / 2,
            "test/answer_entropy": 1.5 * math.log(2),  # both prompts: counts 2, 1, 1 of 4
            "test/sample_accuracy": 5 / 8,
        }
    )
    assert set(answer_metrics(samples, greedy, answers, ks=(1,))) == {
        "exact_match",
        "pass@1",
        "distinct_correct",
        "answer_entropy",
        "sample_accuracy",
    }


def test_a_collapsed_model_has_no_answer_entropy_and_one_distinct_answer() -> None:
    metrics = answer_metrics([["05"] * 16], ["05"], [frozenset({"05", "16", "27"})], split="val")
    assert metrics["val/answer_entropy"] == 0.0 and metrics["val/distinct_correct"] == 1.0
    assert metrics["val/pass@1"] == metrics["val/pass@16"] == metrics["val/exact_match"] == 1.0


def test_answer_metrics_refuses_too_few_samples_or_mismatched_lists() -> None:
    with pytest.raises(ValueError, match="pass@16 needs at least 16 samples"):
        answer_metrics([["a"] * 4], ["a"], [frozenset({"a"})])
    with pytest.raises(ValueError, match="one entry per prompt"):
        answer_metrics([["a"]], ["a", "b"], [frozenset({"a"})], ks=(1,))
