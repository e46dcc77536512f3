"""Generation for language-model methods: the student's own completions of a batch's prompts (on-policy
distillation) and the answer metrics of greedy and sampled completions of a split's prompts.

Every call generates with an explicit ``GenerationConfig`` (greedy, or sampling at a temperature with an
optional top-k; no top-p, no repetition penalty), so a saved model's own ``generation_config.json`` never
changes what is measured or trained on. The model generates in eval mode (no dropout), without gradients,
and goes back to its previous mode afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import GenerationConfig

from divergence_lab.data.text.batches import IGNORE_INDEX, left_padded_prompts, right_padded_batch
from divergence_lab.data.text.tokenizer import decode_completion
from divergence_lab.metrics.generation import answer_metrics

# generate() drops an all-ones attention mask and then feeds the padding of finished sequences, which makes
# transformers print a notice about a missing attention mask although one was given
MISSING_MASK_NOTICE = "strongly recommend passing in an `attention_mask`"


class _MaskGivenFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return MISSING_MASK_NOTICE not in record.getMessage()


logging.getLogger("transformers.modeling_utils").addFilter(_MaskGivenFilter())


# every setting that a saved generation_config.json could otherwise fill in (transformers fills the ones a
# GenerationConfig leaves unset from the model's own), at the value that leaves the distribution as it is;
# the sampling ones are given only when sampling (greedy decoding ignores them, and transformers warns)
PLAIN_DECODING = {"num_beams": 1, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0}
PLAIN_SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "typical_p": 1.0}


@dataclass(frozen=True)
class Sampling:
    """How completions are drawn: ``temperature`` (> 0), ``top_k`` (None: the whole vocabulary) and at most
    ``max_new_tokens`` new tokens."""

    temperature: float
    max_new_tokens: int
    top_k: int | None = None


@dataclass(frozen=True)
class AnswerEvaluation:
    """The generation metrics of a split: the first ``prompts`` prompts (None: all), a greedy completion
    and ``samples`` sampled completions each (``sampling``), ``ks`` of pass@k, ``batch_size`` prompts per
    call, sampling seeded by ``seed``."""

    sampling: Sampling
    samples: int
    ks: tuple[int, ...]
    batch_size: int
    seed: int
    prompts: int | None = None


def on_policy_step(seed: int, step: int, fraction: float) -> bool:
    """Whether training step ``step`` is on-policy: a uniform draw seeded by ``(seed, step)`` falls below
    ``fraction`` (never for 0, always for 1), so a resumed run makes the same choices."""
    return fraction > 0 and float(np.random.default_rng([seed, step]).random()) < fraction


def generation_config(
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int,
    sampling: Sampling | None = None,
    num_return_sequences: int = 1,
) -> GenerationConfig:
    """Greedy decoding of at most ``max_new_tokens`` when ``sampling`` is None, else sampling as it says."""
    common = {
        **PLAIN_DECODING,
        "max_new_tokens": max_new_tokens,
        "pad_token_id": pad_token_id,
        "eos_token_id": eos_token_id,
        "num_return_sequences": num_return_sequences,
    }
    if sampling is None:
        return GenerationConfig(do_sample=False, **common)
    chosen = {"temperature": sampling.temperature, "top_k": sampling.top_k or 0}
    return GenerationConfig(do_sample=True, **{**common, **PLAIN_SAMPLING, **chosen})


def generate_new_tokens(
    model: torch.nn.Module, prompts: dict[str, Tensor], config: GenerationConfig
) -> Tensor:
    """The tokens ``model`` appends to the left-padded ``prompts`` (``(B · num_return_sequences, G)``, the
    completions of one prompt consecutive; positions after a finished sequence hold ``pad_token_id``)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model.generate(**prompts, generation_config=config)
    finally:
        model.train(was_training)
    return output[:, prompts["input_ids"].shape[1] :]


def batch_prompts(batch: dict[str, Tensor]) -> list[list[int]]:
    """The prompt ids of each row of a right-padded training batch: the tokens before its first labelled
    position."""
    labelled = batch["labels"] != IGNORE_INDEX
    starts = labelled.int().argmax(dim=1).tolist()
    return [row[:start] for row, start in zip(batch["input_ids"].tolist(), starts, strict=True)]


def completion_batch(
    prompts: Sequence[Sequence[int]], new_tokens: Tensor, eos_token_id: int, pad_token_id: int
) -> dict[str, Tensor]:
    """A right-padded batch (as the data's) of each prompt followed by its generated tokens up to and
    including the first eos; ``labels`` mark the generated tokens."""
    examples = []
    for prompt, generated in zip(prompts, new_tokens.tolist(), strict=True):
        if eos_token_id in generated:
            generated = generated[: generated.index(eos_token_id) + 1]
        examples.append(([*prompt, *generated], len(prompt)))
    return right_padded_batch(examples, pad_token_id)


def on_policy_batch(
    model: torch.nn.Module, batch: dict[str, Tensor], sampling: Sampling, pad_token_id: int, eos_token_id: int
) -> dict[str, Tensor]:
    """``model``'s sampled completions of ``batch``'s prompts, as a batch whose labels are the generated
    tokens (up to and including eos), on the batch's device."""
    prompts = batch_prompts(batch)
    device = batch["input_ids"].device
    padded = {name: t.to(device) for name, t in left_padded_prompts(prompts, pad_token_id).items()}
    config = generation_config(sampling.max_new_tokens, pad_token_id, eos_token_id, sampling)
    new_tokens = generate_new_tokens(model, padded, config)
    return {
        name: t.to(device)
        for name, t in completion_batch(prompts, new_tokens, eos_token_id, pad_token_id).items()
    }


@contextmanager
def seeded_generation(seed: int, device: torch.device) -> Iterator[None]:
    """Draw with torch's streams seeded by ``seed`` inside, and leave the caller's streams as they were."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def evaluate_answers(
    model: torch.nn.Module, datamodule: Any, split: str, evaluation: AnswerEvaluation, device: torch.device
) -> dict[str, float]:
    """:func:`~divergence_lab.metrics.generation.answer_metrics` of ``model`` on the prompts of ``split``:
    ``exact_match`` of the greedy completions, ``pass@k``, ``distinct_correct``, ``answer_entropy`` and
    ``sample_accuracy`` of the sampled ones."""
    prompts = datamodule.eval_prompts(split)[: evaluation.prompts]
    tokenizer, n = datamodule.tokenizer, evaluation.samples
    pad, eos = datamodule.pad_token_id, datamodule.eos_token_id
    length = evaluation.sampling.max_new_tokens
    greedy_config = generation_config(length, pad, eos)
    sample_config = generation_config(length, pad, eos, evaluation.sampling, num_return_sequences=n)
    greedy: list[str] = []
    samples: list[list[str]] = []
    with seeded_generation(evaluation.seed, device):
        for start in range(0, len(prompts), evaluation.batch_size):
            chunk = prompts[start : start + evaluation.batch_size]
            batch = {name: t.to(device) for name, t in datamodule.generation_batch(chunk).items()}
            greedy += [
                decode_completion(tokenizer, ids) for ids in generate_new_tokens(model, batch, greedy_config)
            ]
            texts = [
                decode_completion(tokenizer, ids) for ids in generate_new_tokens(model, batch, sample_config)
            ]
            samples += [texts[i * n : (i + 1) * n] for i in range(len(chunk))]
    return answer_metrics(samples, greedy, [prompt.answers for prompt in prompts], evaluation.ks)
