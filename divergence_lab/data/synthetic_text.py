"""A seeded synthetic text-classification task (reviews whose label is a noisy, binned sentiment score).

Each sentence mixes neutral filler words with 1 to ``max_cues`` cue phrases. A cue phrase is a positive or
negative cue word (:data:`POSITIVE`, :data:`NEGATIVE`), optionally preceded by an intensifier (weight 2
instead of 1, drawn with probability ``intensifier_rate``) and optionally by a negation before that (the
sign flips, probability ``negation_rate``): ``not very good`` counts −2, ``awful`` −1, ``really superb`` +2.
The sentence's score ``s`` is the sum over its cue phrases. Its label is the bin of ``s + score_noise · ε``,
``ε ~ N(0, 1)``, between the increasing ``class_edges`` (three edges: four classes from "negative" to
"positive"). So the label depends on several cue words, their count and negation scope, and the noise
makes neighbouring classes plausible for the same sentence: a teacher's soft labels carry information
that hard labels lack.

Sentences have ``min_words`` to ``max_words`` words (more when the cue phrases alone are longer). The
three splits are drawn one after the other from one generator seeded with ``data_seed`` and never share a
sentence. The tokenizer is a word-level one trained on the training sentences
(:func:`~divergence_lab.data.text_classification.word_level_tokenizer`); nothing is downloaded. ``seed``
only changes the batch order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from divergence_lab.data.text_classification import (
    TokenizedDataModule,
    check_max_length,
    encode,
    word_level_tokenizer,
)
from divergence_lab.ground.errors import ConfigError

POSITIVE = ("good", "great", "fine", "pleasant", "lovely", "superb", "nice", "bright", "clever", "solid")
NEGATIVE = ("bad", "poor", "awful", "dull", "boring", "weak", "clumsy", "broken", "ugly", "noisy")
NEGATIONS = ("not", "never", "hardly")
INTENSIFIERS = ("very", "really", "truly")
FILLERS = (
    "the", "a", "movie", "plot", "actor", "scene", "was", "is", "and", "but", "with", "story", "music",
    "ending", "film", "cast", "script", "director", "it", "felt", "seemed", "this", "that", "of", "in",
    "on", "for", "overall", "today", "we", "they", "saw", "watched", "again", "some", "every", "part",
    "show", "time", "camera",
)  # fmt: skip
PHRASE_WORDS = 3  # the longest cue phrase: negation, intensifier, cue word
SPECIAL_TOKENS = 2  # [CLS] and [SEP] around a sentence
DRAWS_PER_EXAMPLE = 100  # attempts per wanted sentence before the task is declared too small to fill
SPLITS = ("train", "val", "test")


def pick(words: Sequence[str], rng: np.random.Generator) -> str:
    """One of ``words``, uniformly."""
    return words[int(rng.integers(len(words)))]


@dataclass(frozen=True)
class TextTask:
    """The generative parameters of the task (see the module docstring)."""

    min_words: int = 4
    max_words: int = 12
    max_cues: int = 4
    negation_rate: float = 0.25
    intensifier_rate: float = 0.25
    score_noise: float = 0.5
    class_edges: tuple[float, ...] = (-1.5, 0.0, 1.5)

    def check(self) -> None:
        """Refuse impossible parameters with one line naming the ``data.`` key."""
        for key, minimum in (("min_words", 1), ("max_cues", 1)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"data.{key} must be an integer >= {minimum} (got {value!r})")
        if not isinstance(self.max_words, int) or self.max_words < self.min_words:
            raise ConfigError(f"data.max_words must be an integer >= data.min_words (got {self.max_words!r})")
        for key in ("negation_rate", "intensifier_rate"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1] (got {getattr(self, key)!r})")
        if self.score_noise < 0:
            raise ConfigError(f"data.score_noise must be >= 0 (got {self.score_noise!r})")
        edges = list(self.class_edges)
        if not edges or edges != sorted(set(edges)):
            raise ConfigError(f"data.class_edges must be a non-empty increasing list (got {edges})")

    @property
    def longest_sentence(self) -> int:
        """The most words a sentence can have."""
        return max(self.max_words, PHRASE_WORDS * self.max_cues)

    def draw(self, rng: np.random.Generator) -> tuple[str, int]:
        """One sentence and its cue score ``s``."""
        phrases, score = [], 0
        for _ in range(int(rng.integers(1, self.max_cues + 1))):
            sign = 1 if rng.random() < 0.5 else -1
            phrase = [pick(POSITIVE if sign > 0 else NEGATIVE, rng)]
            weight = 1
            if rng.random() < self.intensifier_rate:
                phrase.insert(0, pick(INTENSIFIERS, rng))
                weight = 2
            if rng.random() < self.negation_rate:
                phrase.insert(0, pick(NEGATIONS, rng))
                sign = -sign
            score += sign * weight
            phrases.append(phrase)
        length = int(rng.integers(self.min_words, self.max_words + 1))
        fillers = max(length - sum(len(phrase) for phrase in phrases), 0)
        units = [[FILLERS[index]] for index in rng.integers(len(FILLERS), size=fillers)] + phrases
        return " ".join(word for index in rng.permutation(len(units)) for word in units[index]), score

    def label(self, scores: Sequence[int], rng: np.random.Generator) -> np.ndarray:
        """The bins of ``scores + score_noise · ε`` between ``class_edges`` (int64, 0-based)."""
        noisy = np.asarray(scores, dtype=np.float64) + self.score_noise * rng.standard_normal(len(scores))
        return np.searchsorted(np.asarray(self.class_edges, dtype=np.float64), noisy).astype(np.int64)


def generate_splits(
    task: TextTask, sizes: dict[str, int], data_seed: int
) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{split: (sentences, labels)}`` for the ``sizes`` of train, val and test, in that order, from one
    generator seeded with ``data_seed``; no sentence appears twice, in a split or across splits."""
    rng = np.random.default_rng(data_seed)
    seen: set[str] = set()
    splits = {}
    for split in SPLITS:
        texts, scores = [], []
        for _ in range(DRAWS_PER_EXAMPLE * sizes[split]):
            if len(texts) == sizes[split]:
                break
            text, score = task.draw(rng)
            if text not in seen:
                seen.add(text)
                texts.append(text)
                scores.append(score)
        if len(texts) < sizes[split]:
            raise ConfigError(
                f"data: only {len(seen)} distinct sentences found for {sum(sizes.values())} examples; "
                "raise data.max_words or data.max_cues, or ask for fewer examples"
            )
        splits[split] = (texts, task.label(scores, rng))
    return splits


class SyntheticTextDataModule(TokenizedDataModule):
    """The synthetic task as token rows ``(N, 3, max_length)``; see the module docstring."""

    def __init__(
        self,
        train_size: int = 4000,
        val_size: int = 500,
        test_size: int = 1000,
        min_words: int = 4,
        max_words: int = 12,
        max_cues: int = 4,
        negation_rate: float = 0.25,
        intensifier_rate: float = 0.25,
        score_noise: float = 0.5,
        class_edges: Sequence[float] = (-1.5, 0.0, 1.5),
        max_length: int = 16,
        data_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        seed: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, label_noise, noise_seed)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        for split, size in self.sizes.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ConfigError(f"data.{split}_size must be an integer >= 1 (got {size!r})")
        self.task = TextTask(
            min_words, max_words, max_cues, negation_rate, intensifier_rate, score_noise, tuple(class_edges)
        )
        self.task.check()
        check_max_length(max_length)
        if max_length < self.task.longest_sentence + SPECIAL_TOKENS:
            raise ConfigError(
                f"data.max_length={max_length} would cut sentences of up to {self.task.longest_sentence} "
                f"words (and their cue phrases); use at least {self.task.longest_sentence + SPECIAL_TOKENS}"
            )
        self.max_length = max_length
        self.data_seed = data_seed
        self.texts: dict[str, list[str]] = {}

    def setup(self, stage: str | None = None) -> None:
        """Generate and tokenize the splits; ``num_classes`` is the task's (one more than its edges), even
        when a small draw misses a class."""
        super().setup(stage)
        self.num_classes = len(self.task.class_edges) + 1

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        generated = generate_splits(self.task, self.sizes, self.data_seed)
        self.texts = {split: texts for split, (texts, _) in generated.items()}
        self.tokenizer = word_level_tokenizer(self.texts["train"])
        return {
            split: (encode(self.tokenizer, texts, None, self.max_length), torch.from_numpy(labels))
            for split, (texts, labels) in generated.items()
        }
