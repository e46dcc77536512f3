"""Metrics of sampled and greedy answers to prompts whose correct answers are a known set.

Answer extraction (:func:`extract_answer`): a completion's answer is its text up to the end-of-sequence
token (the caller decodes generated ids up to the first eos, e.g. with
:func:`divergence_lab.data.text.tokenizer.decode_completion`; an eos token string still in the text also
ends it) and up to the first newline, with surrounding whitespace stripped. An answer is correct when it
is a member of the prompt's answer set.

:func:`answer_metrics` returns, averaged over prompts (names as in ``metrics.json`` after a ``val/`` or
``test/`` prefix):

* ``exact_match``: the greedy answer is correct;
* ``pass@k`` for each ``k``: the unbiased estimate (:func:`pass_at_k`) from the prompt's ``n`` samples of
  the probability that at least one of ``k`` samples is correct;
* ``distinct_correct``: the number of different correct answers among the samples;
* ``answer_entropy``: the entropy (nats) of the empirical distribution of the sampled answers, correct or
  not (the plug-in estimate, biased low for few samples); compare it with :func:`uniform_answer_entropy`,
  the entropy of drawing a correct answer uniformly, which is the training data's distribution;
* ``sample_accuracy``: the fraction of all samples that are correct (equal to ``pass@1`` when every prompt
  has the same number of samples).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

DEFAULT_KS = (1, 4, 16)


def pass_at_k(n: int, c: int, k: int) -> float:
    """``1 - C(n - c, k) / C(n, k)``: the chance that ``k`` of ``n`` samples, ``c`` of them correct, drawn
    without replacement include a correct one (Chen et al., 2021). Computed as the product
    ``1 - prod_{i = n-c+1}^{n} (1 - k / i)``, which never forms a binomial coefficient; 1 when
    ``n - c < k``."""
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n correct samples (got c={c}, n={n})")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n (got k={k}, n={n} samples)")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def extract_answer(completion: str, eos_token: str | None = None) -> str:
    """The answer in a completion's text: up to ``eos_token`` (when given) and the first newline, stripped."""
    if eos_token:
        completion = completion.split(eos_token, 1)[0]
    return completion.split("\n", 1)[0].strip()


def empirical_entropy(values: Sequence[str]) -> float:
    """Entropy in nats of the empirical distribution of ``values`` (0 for a single distinct value)."""
    counts = Counter(values).values()
    total = sum(counts)
    return -sum(count / total * math.log(count / total) for count in counts)


def uniform_answer_entropy(answers: Sequence[frozenset[str]]) -> float:
    """Mean over prompts of ``log |answers|``: the answer entropy of a model that draws a correct answer
    uniformly, as the training data do."""
    return sum(math.log(len(correct)) for correct in answers) / len(answers)


def answer_metrics(
    samples: Sequence[Sequence[str]],
    greedy: Sequence[str],
    answers: Sequence[frozenset[str]],
    ks: Sequence[int] = DEFAULT_KS,
    split: str | None = None,
) -> dict[str, float]:
    """Greedy exact match, mean pass@k, distinct correct answers, answer entropy and sample accuracy.

    ``samples[i]`` are the sampled completions of prompt ``i`` (at least ``max(ks)`` of them),
    ``greedy[i]`` its greedy completion and ``answers[i]`` its correct answers; completions go through
    :func:`extract_answer`. Names are ``exact_match``, ``pass@<k>``, ``distinct_correct``,
    ``answer_entropy`` and ``sample_accuracy``, prefixed with ``<split>/`` when ``split`` is given.
    """
    if not len(samples) == len(greedy) == len(answers) or not answers:
        raise ValueError(
            f"answer_metrics needs one entry per prompt in samples, greedy and answers, and at least one "
            f"prompt (got {len(samples)}, {len(greedy)} and {len(answers)})"
        )
    fewest, needed = min(len(drawn) for drawn in samples), max(ks, default=1)
    if fewest < needed:
        raise ValueError(f"pass@{needed} needs at least {needed} samples per prompt (a prompt has {fewest})")
    extracted = [[extract_answer(text) for text in drawn] for drawn in samples]
    correct = [
        sum(answer in valid for answer in drawn) for drawn, valid in zip(extracted, answers, strict=True)
    ]
    count = len(answers)
    metrics = {
        "exact_match": sum(extract_answer(g) in valid for g, valid in zip(greedy, answers, strict=True))
        / count
    }
    for k in ks:
        metrics[f"pass@{k}"] = (
            sum(pass_at_k(len(d), c, k) for d, c in zip(extracted, correct, strict=True)) / count
        )
    metrics["distinct_correct"] = (
        sum(len(set(d) & valid) for d, valid in zip(extracted, answers, strict=True)) / count
    )
    metrics["answer_entropy"] = sum(empirical_entropy(drawn) for drawn in extracted) / count
    metrics["sample_accuracy"] = sum(correct) / sum(len(drawn) for drawn in extracted)
    prefix = f"{split}/" if split else ""
    return {f"{prefix}{name}": float(value) for name, value in metrics.items()}
