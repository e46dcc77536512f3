"""Rollouts of a causal LM policy for RL post-training: ``G`` sampled completions of each prompt, scored by a
verifier.

A rollout of ``P`` prompts is a right-padded batch of ``S = P · G`` rows (the completions of one prompt
consecutive), each row a prompt followed by its sampled tokens up to and including the first eos, with
``labels`` on the sampled tokens (:func:`~divergence_lab.methods.lm_generation.completion_batch`), and the
rewards ``(P, G)`` of the verifier ``verifier(prompt, completion, answers) -> float`` on the decoded texts.

Sampling is seeded by ``(seed, step)`` (:func:`step_seed`): a resumed run draws the same completions at the
same step, and the caller's random streams are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from divergence_lab.data.text.batches import left_padded_prompts
from divergence_lab.data.text.rows import EvalPrompt
from divergence_lab.data.text.tokenizer import decode_completion
from divergence_lab.methods.lm_generation import (
    Sampling,
    completion_batch,
    generate_new_tokens,
    generation_config,
    seeded_generation,
)
from divergence_lab.metrics.generation import extract_answer

Verifier = Callable[[str, str, frozenset], float]


def answer_reward(prompt: str, completion: str, answers: frozenset) -> float:
    """The embedded tasks' verifier: 1 when the completion's answer (its text up to the first newline,
    stripped: :func:`~divergence_lab.metrics.generation.extract_answer`) is one of ``answers``, else 0."""
    return float(extract_answer(completion) in answers)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for the draws of ``step`` of a run seeded by ``seed``; ``stream`` separates the policy's
    samples (0) from the reference's (1) and from the evaluation's."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(2, dtype=np.uint64)[0] >> 1)


@dataclass
class Rollout:
    """``batch``: the ``P · G`` completions as a right-padded batch (``input_ids``, ``attention_mask``,
    ``labels`` on the sampled tokens); ``rewards``: ``(P, G)``; ``texts``: the decoded completions."""

    batch: dict[str, Tensor]
    rewards: Tensor
    texts: list[str]

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]


def sample_rollout(
    model: torch.nn.Module,
    prompts: Sequence[EvalPrompt],
    group_size: int,
    sampling: Sampling,
    special_tokens: tuple[int, int],
    tokenizer: PreTrainedTokenizerBase,
    verifier: Verifier,
    seed: int,
    device: torch.device,
) -> Rollout:
    """``group_size`` completions of each prompt sampled from ``model`` (seeded by ``seed``), scored by
    ``verifier`` against the prompt's answers."""
    pad, eos = special_tokens
    ids = [list(prompt.prompt_ids) for prompt in prompts]
    padded = {name: t.to(device) for name, t in left_padded_prompts(ids, pad).items()}
    config = generation_config(sampling.max_new_tokens, pad, eos, sampling, num_return_sequences=group_size)
    with seeded_generation(seed, device):
        new_tokens = generate_new_tokens(model, padded, config)
    repeated = [prompt_ids for prompt_ids in ids for _ in range(group_size)]
    batch = {name: t.to(device) for name, t in completion_batch(repeated, new_tokens, eos, pad).items()}
    texts = [decode_completion(tokenizer, row) for row in new_tokens.tolist()]
    rewards = [
        verifier(prompts[i // group_size].prompt, text, prompts[i // group_size].answers)
        for i, text in enumerate(texts)
    ]
    return Rollout(batch, torch.tensor(rewards, dtype=torch.float32).view(len(prompts), group_size), texts)
