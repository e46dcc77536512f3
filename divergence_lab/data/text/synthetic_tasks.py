"""Seeded synthetic prompt tasks with exactly checkable answer sets, small enough for a tiny model on CPU.

Each task draws distinct prompts (:class:`TaskExample`: a prompt and the set of its correct answers) from
its own random generator; :func:`split_examples` cuts one list of distinct prompts into train/val/test,
so no prompt is in two splits. The texts use only :data:`TASK_ALPHABET`.

* ``arithmetic`` — one correct answer. ``"012+345="`` → ``"0357"``: with ``fixed_width`` (the default)
  the operands are zero-padded to ``digits`` digits and the result to ``digits + 1``, so every digit sits
  at a fixed position; with ``reverse_answer`` the result is written least-significant digit first
  (``"7530"``), so that each answer digit depends only on two operand digits and the carry of the digit
  just written. Reversal is off by default: with fixed widths a 2-layer GPT-2 (width 128) trained on
  10 000 prompts of 3-digit sums on one CPU thread reached about 85 % greedy exact match on held-out
  prompts within about four minutes in either order (one seed each; most-significant first was not the
  slower one), and the natural order keeps the answers readable. Subtraction (``operations`` holding
  ``-``) always subtracts the smaller operand from the larger, so results are never negative.
* ``multi_answer`` — several correct answers, so that the diversity of a model's answers is measurable.
  ``"037<?<042:"`` asks for a number strictly between the two bounds: the answers are exactly
  ``{"038", "039", "040", "041"}`` (zero-padded to ``digits`` digits with ``fixed_width``). The number of
  answers is drawn uniformly in ``[min_answers, max_answers]``, so ``digits`` controls the number of
  distinct prompts and ``max_answers`` how much diversity there is to find.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from divergence_lab.ground.errors import ConfigError

TASK_ALPHABET = "0123456789+-=<?:"
OPERATIONS = ("+", "-")
SPLIT_NAMES = ("train", "val", "test")
EQUALS, LESS, QUESTION, COLON = "=", "<", "?", ":"


@dataclass(frozen=True)
class TaskExample:
    """A prompt and the exact set of its correct answers (each answer is a completion's text)."""

    prompt: str
    answers: frozenset[str]


def arithmetic_answer(value: int, digits: int, fixed_width: bool, reverse_answer: bool) -> str:
    """The written form of a result ``value``: zero-padded to ``digits + 1`` digits when ``fixed_width``,
    reversed (least-significant digit first) when ``reverse_answer``."""
    text = str(value).zfill(digits + 1) if fixed_width else str(value)
    return text[::-1] if reverse_answer else text


def arithmetic_prompt_count(digits: int, operations: Sequence[str]) -> int:
    """How many distinct arithmetic prompts exist: ``10^(2d)`` sums, ``10^d (10^d + 1) / 2`` differences."""
    size = 10**digits
    return sum(size * size if operation == "+" else size * (size + 1) // 2 for operation in operations)


def draw_arithmetic(digits: int, operations: Sequence[str], fixed_width: bool, reverse_answer: bool):
    """A function drawing one arithmetic example (operands uniform in ``0 .. 10^digits - 1``)."""

    def draw(rng: random.Random) -> TaskExample:
        operation = rng.choice(list(operations))
        left, right = rng.randrange(10**digits), rng.randrange(10**digits)
        if operation == "-" and left < right:
            left, right = right, left
        operands = [str(n).zfill(digits) if fixed_width else str(n) for n in (left, right)]
        value = left + right if operation == "+" else left - right
        answer = arithmetic_answer(value, digits, fixed_width, reverse_answer)
        return TaskExample(f"{operands[0]}{operation}{operands[1]}{EQUALS}", frozenset({answer}))

    return draw


def multi_answer_prompt_count(digits: int, min_answers: int, max_answers: int) -> int:
    """How many distinct multi-answer prompts exist: the bounds ``a < b`` below ``10^digits`` with
    ``min_answers <= b - a - 1 <= max_answers``."""
    return sum(max(0, 10**digits - answers - 1) for answers in range(min_answers, max_answers + 1))


def draw_multi_answer(digits: int, min_answers: int, max_answers: int, fixed_width: bool):
    """A function drawing one multi-answer example: a number of answers uniform in ``[min_answers,
    max_answers]`` (at most ``10^digits - 2``, the most that fit), then a lower bound uniform among those
    that keep the upper one below ``10^digits``."""
    most = min(max_answers, 10**digits - 2)

    def written(number: int) -> str:
        return str(number).zfill(digits) if fixed_width else str(number)

    def draw(rng: random.Random) -> TaskExample:
        count = rng.randint(min_answers, most)
        low = rng.randrange(10**digits - count - 1)
        high = low + count + 1
        answers = frozenset(written(number) for number in range(low + 1, high))
        return TaskExample(f"{written(low)}{LESS}{QUESTION}{LESS}{written(high)}{COLON}", answers)

    return draw


def distinct_examples(
    draw: Callable[[random.Random], TaskExample], count: int, seed: int | str
) -> list[TaskExample]:
    """``count`` examples with distinct prompts, drawn by ``draw`` from a generator seeded with ``seed``
    (the caller checks that ``count`` distinct prompts exist)."""
    rng = random.Random(seed)
    seen: dict[str, TaskExample] = {}
    while len(seen) < count:
        example = draw(rng)
        seen.setdefault(example.prompt, example)
    return list(seen.values())


def check_digits(digits: object) -> None:
    """Refuse a ``data.digits`` that is not an integer >= 1."""
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ConfigError(f"data.digits must be an integer >= 1 (got {digits!r})")


def arithmetic_examples(
    count: int,
    digits: int,
    operations: Sequence[str],
    fixed_width: bool,
    reverse_answer: bool,
    seed: int | str,
) -> list[TaskExample]:
    """``count`` distinct arithmetic prompts with their answer (see the module docstring)."""
    check_digits(digits)
    if not operations or any(operation not in OPERATIONS for operation in operations):
        raise ConfigError(
            f"data.operations must be a non-empty list of {' and '.join(OPERATIONS)} (got {operations!r})"
        )
    operations = sorted(set(operations))
    available = arithmetic_prompt_count(digits, operations)
    if count > available:
        raise ConfigError(
            f"the arithmetic task has {available} distinct prompts with data.digits={digits}; "
            f"{count} were asked for (raise data.digits or lower the split sizes)"
        )
    return distinct_examples(draw_arithmetic(digits, operations, fixed_width, reverse_answer), count, seed)


def multi_answer_examples(
    count: int, digits: int, min_answers: int, max_answers: int, fixed_width: bool, seed: int | str
) -> list[TaskExample]:
    """``count`` distinct multi-answer prompts with their answer sets (see the module docstring)."""
    check_digits(digits)
    if (
        not isinstance(min_answers, int)
        or not isinstance(max_answers, int)
        or not 2 <= min_answers <= max_answers
    ):
        raise ConfigError(
            f"data.min_answers and data.max_answers must be integers with 2 <= min_answers <= max_answers "
            f"(got {min_answers!r} and {max_answers!r})"
        )
    available = multi_answer_prompt_count(digits, min_answers, max_answers)
    if count > available:
        raise ConfigError(
            f"the multi_answer task has {available} distinct prompts with data.digits={digits}, "
            f"data.min_answers={min_answers} and data.max_answers={max_answers}; {count} were asked for "
            "(raise data.digits or lower the split sizes)"
        )
    return distinct_examples(draw_multi_answer(digits, min_answers, max_answers, fixed_width), count, seed)


def split_examples(examples: Sequence[TaskExample], sizes: Sequence[int]) -> dict[str, list[TaskExample]]:
    """Cut ``examples`` (distinct prompts) into consecutive train/val/test parts of the given sizes."""
    bounds = list(itertools.accumulate(sizes, initial=0))
    return {name: list(examples[bounds[i] : bounds[i + 1]]) for i, name in enumerate(SPLIT_NAMES)}
