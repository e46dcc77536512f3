"""What a metric name means to a reader: which direction is better, and how an axis or a column says so.

A metric is named ``<split>/<quantity>`` (``test/acc``, ``val/ece``, ``test/teacher_acc``) or is a top-level
number of ``metrics.json`` (``wall_time_s``). The quantity decides the direction: accuracies are better
higher (↑), and so are generation scores (exact match, pass@k, distinct correct answers); calibration
errors, log-losses, Brier scores, losses, the divergence to the teacher and times are better lower (↓). A
quantity of neither kind has no direction (e.g. ``answer_entropy``: more is more diverse, not better): it
is reported, never ranked.
"""

from __future__ import annotations

import math

HIGHER_IS_BETTER = (
    "acc",
    "accuracy",
    "acc_all",
    "acc_old",
    "acc_new",
    "f1",
    "auroc",
    "exact_match",
    "distinct_correct",
    "agreement",  # top-1 agreement with the teacher: fidelity of the distillation
    "reward",  # RL: the verifier's mean reward of sampled completions
    "answer_prob",  # RL: the exact probability of a correct answer
)
HIGHER_IS_BETTER_PREFIXES = ("pass@",)  # pass@1, pass@4 ...
LOWER_IS_BETTER = (
    "ece",
    "nll",
    "brier",
    "loss",
    "error",
    "time_s",
    "wall_time_s",
    "search_time_s",
    "kl_to_teacher",
    "kl_teacher_student",
)
QUANTITY_NAMES = {
    "acc": "accuracy",
    "acc_all": "accuracy (All)",
    "acc_old": "accuracy (Old)",
    "acc_new": "accuracy (New)",
    "ece": "ECE",
    "nll": "NLL",
    "brier": "Brier score",
    "wall_time_s": "wall time",
    "exact_match": "exact match",
    "distinct_correct": "distinct correct answers",
    "agreement": "agreement with the teacher",
    "kl_teacher_student": "KL(teacher ‖ student)",
    "reward": "reward",
    "answer_prob": "P(correct answer), exact",
    "kl_reverse_seq": "KL(policy ‖ reference) per sequence",
    "kl_forward_seq": "KL(reference ‖ policy) per sequence",
    "kl_reverse": "KL(policy ‖ reference) per token",
    "kl_forward": "KL(reference ‖ policy) per token",
    "correct_entropy": "entropy over the correct answers",
    "answer_coverage": "coverage of the answer set",
    "optimistic_best_of_evals_acc": "accuracy, best of evaluations (optimistic)",
    "distill": "divergence term",
}
UNITS = {"wall_time_s": "s", "search_time_s": "s", "answer_entropy": "nats"}
UNIT_INTERVAL = ("ece", "agreement", "exact_match")  # besides accuracies and pass@k: values in [0, 1]
NON_NEGATIVE = ("nll", "brier", "loss", "time_s", "wall_time_s", "search_time_s", "kl_to_teacher", "kl")


def quantity(metric: str) -> str:
    """``test/teacher_acc`` → ``teacher_acc``; ``wall_time_s`` → ``wall_time_s``."""
    return metric.rsplit("/", 1)[-1]


def direction(metric: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 when the name does not say."""
    name = quantity(metric)
    if any(name == q or name.endswith("_" + q) for q in HIGHER_IS_BETTER):
        return 1
    if name.startswith(HIGHER_IS_BETTER_PREFIXES):
        return 1
    if any(name == q or name.endswith("_" + q) for q in LOWER_IS_BETTER):
        return -1
    return 0


def is_accuracy(metric: str) -> bool:
    """Accuracies share one axis range in the plots (a common baseline), and are shown in [0, 1]."""
    name = quantity(metric)
    return name in ("acc", "accuracy") or name.startswith("acc_") or name.endswith("_acc")


def arrow(metric: str) -> str:
    """``↑`` (higher is better), ``↓`` (lower is better) or the empty string."""
    return {1: "↑", -1: "↓", 0: ""}[direction(metric)]


def axis_label(metric: str) -> str:
    """``test accuracy (↑ better)``, ``test ECE (↓ better)``, ``wall time [s] (↓ better)``."""
    split, _, _ = metric.rpartition("/")
    name = quantity(metric)
    readable = QUANTITY_NAMES.get(name, name.replace("_", " "))
    if name.startswith("teacher_"):
        readable = "teacher " + QUANTITY_NAMES.get(name.removeprefix("teacher_"), name)
    unit = f" [{UNITS[name]}]" if name in UNITS else ""
    better = {1: " (↑ better)", -1: " (↓ better)", 0: ""}[direction(metric)]
    return f"{split + ' ' if split else ''}{readable}{unit}{better}"


def bounds(metric: str) -> tuple[float, float] | None:
    """The range a metric's values cannot leave (accuracies, ECE, pass@k: [0, 1]; log-losses, Brier scores,
    divergences and times: [0, ∞)), or None when the name does not say."""
    name = quantity(metric)
    if is_accuracy(metric) or name in UNIT_INTERVAL or name.startswith(HIGHER_IS_BETTER_PREFIXES):
        return 0.0, 1.0
    if any(name == q or name.endswith("_" + q) for q in NON_NEGATIVE):
        return 0.0, math.inf
    return None
