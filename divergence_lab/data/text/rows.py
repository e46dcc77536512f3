"""The examples the language-model data modules serve, and the check of one record read from a file.

A :class:`TextRow` is one prompt with one completion (a teacher-forced example) and the prompt's full set
of correct answers; an :class:`EvalPrompt` is one distinct prompt, tokenized, for generation. Answers are
compared with a completion's text up to its first newline, stripped
(:func:`divergence_lab.metrics.generation.extract_answer`), so an answer is stored stripped and may not
hold a newline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from divergence_lab.ground.errors import ConfigError
from divergence_lab.metrics.generation import extract_answer


@dataclass(frozen=True)
class TextRow:
    """One example: ``prompt`` then ``completion``; ``answers`` are the prompt's correct answers and
    ``where`` names the example in messages (``train.jsonl:12``, ``val[3]``)."""

    prompt: str
    completion: str
    answers: frozenset[str]
    where: str


@dataclass(frozen=True)
class EvalPrompt:
    """A distinct prompt of a split, its token ids (as a model reads them, a beginning-of-sequence token
    first where the tokenizer adds one) and the set of its correct answers."""

    prompt: str
    prompt_ids: list[int]
    answers: frozenset[str]


def row_from_record(record: Any, where: str, key: str = "data.path") -> TextRow:
    """A :class:`TextRow` from ``{"prompt": str, "completion": str}`` with an optional ``"answers"`` (a
    non-empty list of strings; without it the one answer is the completion's). Other keys are ignored.
    A malformed record is refused in one line naming ``key`` and ``where``."""
    if not isinstance(record, Mapping):
        raise ConfigError(
            f"{key}: {where}: expected an object with prompt and completion (got {record!r:.60})"
        )
    for field in ("prompt", "completion"):
        if not isinstance(record.get(field), str):
            raise ConfigError(f"{key}: {where}: {field!r} must be a string (got {record.get(field)!r:.60})")
    answers = record.get("answers")
    if answers is None:
        return TextRow(
            record["prompt"], record["completion"], frozenset({extract_answer(record["completion"])}), where
        )
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise ConfigError(
            f"{key}: {where}: 'answers' must be a non-empty list of strings (got {answers!r:.60})"
        )
    if any("\n" in answer for answer in answers):
        raise ConfigError(
            f"{key}: {where}: an answer holds a newline; answers are compared with a completion's first line"
        )
    return TextRow(record["prompt"], record["completion"], frozenset(a.strip() for a in answers), where)
