"""Which way the language-model generation metrics are better, as reports rank and label them."""

import pytest

from divergence_lab.report.metric_info import arrow, axis_label, direction


@pytest.mark.parametrize(
    "metric, expected",
    [
        ("test/exact_match", 1),
        ("val/pass@1", 1),
        ("test/pass@16", 1),
        ("test/distinct_correct", 1),
        ("test/sample_accuracy", 1),
        ("test/answer_entropy", 0),
        ("val/nll", -1),
        ("test/kl_to_teacher", -1),
        ("test/acc", 1),
    ],
)
def test_generation_metrics_have_their_direction(metric: str, expected: int) -> None:
    assert direction(metric) == expected


def test_answer_entropy_is_labelled_in_nats_without_a_better_side() -> None:
    assert arrow("test/answer_entropy") == ""
    assert axis_label("test/answer_entropy") == "test answer entropy [nats]"
    assert axis_label("val/pass@4") == "val pass@4 (↑ better)"
