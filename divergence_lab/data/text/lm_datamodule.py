"""LightningDataModules of prompt/completion text for causal language models.

:class:`CausalLMDataModule` turns the rows of a source into batches; its subclasses, one per
``conf/data/lm_*.yaml``, read the source:

* :class:`SyntheticLMDataModule` (``lm_synthetic``): the seeded tasks of
  :mod:`~divergence_lab.data.text.synthetic_tasks` (``arithmetic``, ``multi_answer`` or ``mixed``);
* :class:`JsonlLMDataModule` (``lm_jsonl``): ``train.jsonl`` / ``validation.jsonl`` / ``test.jsonl``;
* :class:`SavedLMDataModule` (``lm_hf_disk``): a ``datasets.DatasetDict`` saved with ``save_to_disk``.

After :meth:`~CausalLMDataModule.setup`:

* training batches (:meth:`~CausalLMDataModule.train_dataloader`, order a function of ``(seed, epoch)``)
  and teacher-forced validation/test batches are dicts of int64 ``(B, L)`` tensors ``input_ids``,
  ``attention_mask`` and ``labels``, padded on the right; ``labels`` are ``-100`` on prompt and padding
  positions, so a loss covers the completion tokens and the end-of-sequence token only, and are aligned
  with ``input_ids`` (shift by one before the loss, as Hugging Face causal models do);
* :meth:`~CausalLMDataModule.eval_prompts` lists the distinct prompts of a split with their correct
  answers, for generation; :meth:`~CausalLMDataModule.generation_batch` pads them on the left;
* ``tokenizer``, ``vocab_size``, ``pad_token_id``, ``eos_token_id``, ``bos_token_id`` and
  ``max_new_tokens`` (the longest completion or answer in tokens, its eos included) describe the text.

A prompt is encoded with the tokenizer's special tokens (the character tokenizer puts ``<bos>`` first),
its completion without them and followed by the end-of-sequence token; the two are encoded separately, so
the prompt's ids are the same in training and generation. The tokenizer is the folder ``data.tokenizer``
or, when that is null, a character tokenizer
(:func:`~divergence_lab.data.text.tokenizer.build_char_tokenizer`) over the synthetic tasks' alphabet
(:data:`~divergence_lab.data.text.synthetic_tasks.TASK_ALPHABET`) or over the characters of the files.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from divergence_lab.data.tensor_datamodule import EpochSeededSampler, class_path, fingerprint_of
from divergence_lab.data.text.batches import EncodedExample, left_padded_prompts, right_padded_batch
from divergence_lab.data.text.jsonl import file_stats, jsonl_files, read_jsonl_splits, resolve
from divergence_lab.data.text.rows import EvalPrompt, TextRow
from divergence_lab.data.text.saved import folder_stats, read_saved_splits
from divergence_lab.data.text.synthetic_tasks import (
    SPLIT_NAMES,
    TASK_ALPHABET,
    TaskExample,
    arithmetic_examples,
    multi_answer_examples,
    split_examples,
)
from divergence_lab.data.text.tokenizer import build_char_tokenizer, load_tokenizer, tokenizer_fingerprint
from divergence_lab.ground.errors import ConfigError

TASKS = ("arithmetic", "multi_answer", "mixed")


def check_integer(value: Any, key: str, low: int) -> None:
    """Refuse ``data.<key>`` unless it is an integer >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"data.{key} must be an integer >= {low} (got {value!r})")


class CausalLMDataModule(L.LightningDataModule):
    """Prompt/completion text as batches for a causal language model; subclasses implement
    :meth:`read_rows`, :meth:`source_fingerprint` and, optionally, :meth:`char_alphabet`."""

    def __init__(
        self,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        max_length: int = 64,
        tokenizer: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_integer(batch_size, "batch_size", 1)
        check_integer(eval_batch_size, "eval_batch_size", 1)
        check_integer(max_length, "max_length", 2)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_length = max_length
        self.tokenizer_path = tokenizer
        self.seed = seed
        self.rows: dict[str, list[TextRow]] = {}

    def read_rows(self) -> dict[str, list[TextRow]]:
        """``{"train": rows, "val": rows, "test": rows}``, each split non-empty."""
        raise NotImplementedError

    def source_fingerprint(self) -> Any:
        """JSON-serialisable identity of the source's examples (hashed by :meth:`data_fingerprint`)."""
        raise NotImplementedError

    def char_alphabet(self, rows: dict[str, list[TextRow]]) -> str:
        """The characters of the character tokenizer: by default every character of the rows, sorted."""
        texts = (
            text
            for split in rows.values()
            for row in split
            for text in (row.prompt, row.completion, *row.answers)
        )
        return "".join(sorted(set().union(*texts)))

    def setup(self, stage: str | None = None) -> None:
        if self.rows:
            return
        rows = self.read_rows()
        if self.tokenizer_path is None:
            tokenizer = build_char_tokenizer(self.char_alphabet(rows), model_max_length=self.max_length)
        else:
            tokenizer = load_tokenizer(self.tokenizer_path)
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.eos_token_id = int(tokenizer.eos_token_id)
        self.bos_token_id = None if tokenizer.bos_token_id is None else int(tokenizer.bos_token_id)
        self.encoded = {split: self.encode(split_rows) for split, split_rows in rows.items()}
        self.prompts = {split: self.distinct_prompts(split_rows) for split, split_rows in rows.items()}
        answers = sorted({answer for split in rows.values() for row in split for answer in row.answers})
        answer_lengths = [len(ids) + 1 for ids in self.token_ids(answers, special=False)]
        completion_lengths = [len(ids) - length for split in self.encoded.values() for ids, length in split]
        self.max_new_tokens = max(completion_lengths + answer_lengths)
        self.rows = rows

    def token_ids(self, texts: Sequence[str], special: bool) -> list[list[int]]:
        """The ids of each text, with the tokenizer's special tokens when ``special``."""
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=special)["input_ids"]]

    def encode(self, rows: Sequence[TextRow]) -> list[EncodedExample]:
        """Each row as (prompt ids, completion ids, eos) and the prompt's length; refuse an empty prompt or
        an example longer than ``max_length``, naming it."""
        prompts = self.token_ids([row.prompt for row in rows], special=True)
        completions = self.token_ids([row.completion for row in rows], special=False)
        encoded = []
        for row, prompt_ids, completion_ids in zip(rows, prompts, completions, strict=True):
            if not prompt_ids:
                raise ConfigError(
                    f"data: {row.where}: the prompt has no tokens (generation needs at least one)"
                )
            ids = [*prompt_ids, *completion_ids, self.eos_token_id]
            if len(ids) > self.max_length:
                raise ConfigError(
                    f"data.max_length={self.max_length} is shorter than {row.where} ({len(ids)} tokens with "
                    "its end-of-sequence token); raise data.max_length"
                )
            encoded.append((ids, len(prompt_ids)))
        return encoded

    def distinct_prompts(self, rows: Sequence[TextRow]) -> list[EvalPrompt]:
        """The distinct prompts of ``rows`` in order of first appearance; a prompt's answers are the union
        of its rows' answers."""
        answers: dict[str, set[str]] = {}
        for row in rows:
            answers.setdefault(row.prompt, set()).update(row.answers)
        ids = self.token_ids(list(answers), special=True)
        return [EvalPrompt(p, i, frozenset(a)) for (p, a), i in zip(answers.items(), ids, strict=True)]

    def eval_prompts(self, split: str) -> list[EvalPrompt]:
        """The distinct prompts of ``split`` (``val``, ``test`` or ``train``) with their correct answers."""
        if split not in self.prompts:
            raise ValueError(f"eval_prompts: split must be one of {', '.join(self.prompts)} (got {split!r})")
        return self.prompts[split]

    def generation_batch(self, prompts: Sequence[EvalPrompt]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` of ``prompts``, padded on the left for batched generation."""
        return left_padded_prompts([prompt.prompt_ids for prompt in prompts], self.pad_token_id)

    def collate(self) -> functools.partial:
        """The collation of the loaders: :func:`right_padded_batch` with this tokenizer's padding id."""
        return functools.partial(right_padded_batch, pad_token_id=self.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        examples = self.encoded["train"]
        return DataLoader(
            examples,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(len(examples), self.seed),
            collate_fn=self.collate(),
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.encoded[split], batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.collate()
        )

    def val_dataloader(self) -> DataLoader:
        """Teacher-forced batches of every validation row, in a fixed order."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Teacher-forced batches of every test row, in a fixed order."""
        return self._eval_loader("test")

    def data_fingerprint(self) -> str:
        """SHA-256 (hex digest) of the data served, for the teacher cache's key: the module's class, the
        source (:meth:`source_fingerprint`: the generated text, or the files' names, sizes and
        modification times) and the tokenizer (:func:`tokenizer_fingerprint`). Call after :meth:`setup`."""
        return fingerprint_of(
            {
                "dataset": class_path(self),
                "source": self.source_fingerprint(),
                "tokenizer": tokenizer_fingerprint(self.tokenizer),
            }
        )


class SyntheticLMDataModule(CausalLMDataModule):
    """The seeded synthetic tasks (``task``: ``arithmetic``, ``multi_answer`` or ``mixed``, half of each).

    ``train_prompts`` / ``val_prompts`` / ``test_prompts`` distinct prompts (no prompt in two splits) are
    drawn from ``data_seed``. Each training prompt gives ``completions_per_prompt`` training rows, each
    completion an answer drawn uniformly from its correct answers (seeded by ``data_seed``), so the data's
    answer distribution is uniform; each validation and test prompt gives one row per correct answer.
    ``seed`` (the run's) only orders the training batches.
    """

    def __init__(
        self,
        task: str = "arithmetic",
        train_prompts: int = 5000,
        val_prompts: int = 200,
        test_prompts: int = 200,
        digits: int = 3,
        operations: Sequence[str] = ("+",),
        fixed_width: bool = True,
        reverse_answer: bool = False,
        min_answers: int = 2,
        max_answers: int = 8,
        completions_per_prompt: int = 1,
        data_seed: int = 0,
        tokenizer: str | None = None,
        max_length: int = 32,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, max_length, tokenizer, seed)
        if task not in TASKS:
            raise ConfigError(f"data.task must be one of {', '.join(TASKS)} (got {task!r})")
        for key, value in (
            ("train_prompts", train_prompts),
            ("val_prompts", val_prompts),
            ("test_prompts", test_prompts),
        ):
            check_integer(value, key, 1)
        check_integer(completions_per_prompt, "completions_per_prompt", 1)
        self.task = task
        self.sizes = (train_prompts, val_prompts, test_prompts)
        self.arithmetic = {
            "digits": digits,
            "operations": list(operations),
            "fixed_width": fixed_width,
            "reverse_answer": reverse_answer,
        }
        self.multi_answer = {
            "digits": digits,
            "min_answers": min_answers,
            "max_answers": max_answers,
            "fixed_width": fixed_width,
        }
        self.completions_per_prompt = completions_per_prompt
        self.data_seed = data_seed

    def task_sizes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The (train, val, test) prompt counts of the arithmetic task and of the multi-answer task."""
        unused = (0,) * len(self.sizes)
        if self.task == "arithmetic":
            return self.sizes, unused
        if self.task == "multi_answer":
            return unused, self.sizes
        return tuple(size - size // 2 for size in self.sizes), tuple(size // 2 for size in self.sizes)

    def task_splits(self) -> dict[str, list[TaskExample]]:
        """The train/val/test examples of the task (for ``mixed``: arithmetic first, then multi-answer)."""
        arithmetic_sizes, multi_sizes = self.task_sizes()
        seeds = {task: f"{task}:{self.data_seed}" for task in ("arithmetic", "multi_answer")}
        arithmetic = arithmetic_examples(sum(arithmetic_sizes), **self.arithmetic, seed=seeds["arithmetic"])
        multi = multi_answer_examples(sum(multi_sizes), **self.multi_answer, seed=seeds["multi_answer"])
        parts = [split_examples(arithmetic, arithmetic_sizes), split_examples(multi, multi_sizes)]
        return {name: parts[0][name] + parts[1][name] for name in SPLIT_NAMES}

    def read_rows(self) -> dict[str, list[TextRow]]:
        splits = self.task_splits()
        rng = random.Random(f"completions:{self.data_seed}")
        train = [
            TextRow(example.prompt, rng.choice(sorted(example.answers)), example.answers, f"train[{index}]")
            for index, example in enumerate(splits["train"])
            for _ in range(self.completions_per_prompt)
        ]
        rows = {"train": train}
        for name in ("val", "test"):
            rows[name] = [
                TextRow(example.prompt, answer, example.answers, f"{name}[{index}]")
                for index, example in enumerate(splits[name])
                for answer in sorted(example.answers)
            ]
        return rows

    def char_alphabet(self, rows: dict[str, list[TextRow]]) -> str:
        return TASK_ALPHABET

    def source_fingerprint(self) -> Any:
        text = json.dumps(
            {
                split: [[r.prompt, r.completion, sorted(r.answers)] for r in rows]
                for split, rows in self.rows.items()
            }
        )
        return {"task": self.task, "text_sha256": hashlib.sha256(text.encode()).hexdigest()}


class StoredLMDataModule(CausalLMDataModule):
    """Examples read from the user's files at ``path`` (what ``path`` holds is the subclass's format)."""

    def __init__(
        self,
        path: Any = None,
        tokenizer: str | None = None,
        max_length: int = 256,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, max_length, tokenizer, seed)
        self.path = path


class JsonlLMDataModule(StoredLMDataModule):
    """Examples from JSON-lines files (:mod:`~divergence_lab.data.text.jsonl`): ``path`` is a folder
    holding ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl``, or a mapping of the keys ``train``,
    ``validation`` and ``test`` to files. Every line of a file is one row."""

    def read_rows(self) -> dict[str, list[TextRow]]:
        self.files = jsonl_files(self.path)
        return read_jsonl_splits(self.files)

    def source_fingerprint(self) -> Any:
        return file_stats(self.files)


class SavedLMDataModule(StoredLMDataModule):
    """Examples from a ``datasets.DatasetDict`` saved with ``save_to_disk`` in the folder ``path``
    (:mod:`~divergence_lab.data.text.saved`); needs the optional package ``datasets``."""

    def read_rows(self) -> dict[str, list[TextRow]]:
        if self.path is None:
            raise ConfigError("data.path: set the folder of a dataset saved with save_to_disk")
        self.folder = resolve(self.path)
        return read_saved_splits(self.folder)

    def source_fingerprint(self) -> Any:
        return folder_stats(self.folder)
