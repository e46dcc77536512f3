"""Answer metrics without sampling noise, by teacher forcing, and the divergences of a policy from a reference
on its own samples.

Exact answer probabilities. For a prompt ``x`` with correct answers ``A``, the model's probability of
answering ``a`` is the probability of the token ids the data module trains on, ``a``'s ids (no special
tokens) followed by the end-of-sequence token:

    log π(a | x) = Σ_t log softmax(z_t / T)[y_t]   over the answer's tokens and the eos,

and ``p(x) = Σ_{a ∈ A} π(a | x)`` is the probability that one sampled completion is correct.
:func:`exact_answer_metrics` turns these into (each a mean over prompts):

* ``answer_prob``: ``p(x)``;
* ``pass@k_exact``: ``1 − (1 − p(x))^k``, the chance that at least one of ``k`` independent samples is
  correct; the sampled ``pass@k`` of :func:`divergence_lab.metrics.generation.answer_metrics` is an
  unbiased estimate of the same quantity;
* ``correct_entropy``: the entropy in nats of the correct answers' shares ``s_a = π(a | x) / p(x)``,
  ``H = −Σ_a s_a log s_a`` (0 for one answer; ``log |A|`` when the model spreads its correct mass evenly);
* ``answer_coverage``: the fraction of ``A`` whose share is at least :data:`COVERAGE_FRACTION_OF_UNIFORM`
  of the even share, ``s_a ≥ COVERAGE_FRACTION_OF_UNIFORM / |A|``. The threshold is relative to ``1/|A|``
  so that an even spread covers every answer whatever ``|A|``, and a model that has collapsed onto one
  answer covers ``1/|A|``;
* ``answer_coverage_mass``: ``exp(H) / |A|``, the effective number of correct answers as a fraction of
  ``|A|`` (threshold-free; 1 for an even spread, ``1/|A|`` for a collapse).

Single-answer prompts (arithmetic) have coverage 1 and entropy 0; pass only multi-answer prompts to read
the diversity metrics alone. The exact probability counts the canonical ids of an answer only: a sampled
completion that decodes to a correct answer by another path (special tokens such as padding emitted
between its characters, which decoding drops, or a tokenizer with several ways to spell a text) is
correct for the sampled metrics but not here, so ``answer_prob`` is a lower bound of the sampled
accuracy, equal to it when the model gives such paths no mass.

Divergences on samples (:func:`policy_sample_divergences`): on a right-padded batch of a policy's sampled
completions, the full-vocabulary per-token ``KL(π‖ref)``, ``KL(ref‖π)`` and ``H(π)`` at the generated
positions. Forgetting (:func:`heldout_nll`): the teacher-forced NLL per token of one synthetic task's
completions in a split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from divergence_lab import divergences
from divergence_lab.data.text.batches import EncodedExample
from divergence_lab.data.text.rows import EvalPrompt, TextRow
from divergence_lab.data.text.synthetic_tasks import COLON, EQUALS, LESS, QUESTION
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.lm_tokens import (
    NextTokenPredictions,
    labelled_log_probs,
    next_token_predictions,
    shifted_targets,
    token_entropy,
)
from divergence_lab.metrics.best_of_evals import preserved_modes

COVERAGE_FRACTION_OF_UNIFORM = 0.25  # an answer is covered when its share is >= a quarter of 1/|A|
SYNTHETIC_TASKS = ("arithmetic", "multi_answer")
MULTI_ANSWER_MARK = f"{LESS}{QUESTION}{LESS}"  # "037<?<042:"


def completion_examples(datamodule: Any, prompt: EvalPrompt) -> dict[str, EncodedExample]:
    """Each correct answer of ``prompt`` encoded as the data module encodes a training row (prompt ids,
    answer ids, eos; and the prompt's length), answers in sorted order."""
    answers = sorted(prompt.answers)
    rows = [
        TextRow(prompt.prompt, answer, prompt.answers, f"answer {answer!r} of {prompt.prompt!r}")
        for answer in answers
    ]
    return dict(zip(answers, datamodule.encode(rows), strict=True))


def sequence_log_probabilities(
    model: torch.nn.Module, batch: dict[str, Tensor], temperature: float = 1.0
) -> Tensor:
    """``Σ_t log softmax(z_t / T)[y_t]`` over each row's labelled tokens, (B,), at least float32."""
    logits = next_token_predictions(model, batch, fused=False).logits / temperature
    return labelled_log_probs(NextTokenPredictions(logits=logits), batch["labels"]).sum(dim=1)


def answer_log_probabilities(
    model: torch.nn.Module,
    datamodule: Any,
    prompts: Sequence[EvalPrompt],
    batch_size: int,
    device: torch.device,
    temperature: float = 1.0,
) -> list[dict[str, float]]:
    """For each prompt, ``{answer: log π(answer + eos | prompt)}`` over its correct answers, at sampling
    temperature ``temperature`` (logits divided by it), in float32 at least; ``batch_size`` (prompt,
    answer) sequences per forward pass, without gradients and in eval mode (the model's modes are given
    back afterwards)."""
    if temperature <= 0:
        raise ValueError(f"answer_log_probabilities needs temperature > 0 (got {temperature})")
    sequences = [
        (index, answer, example)
        for index, prompt in enumerate(prompts)
        for answer, example in completion_examples(datamodule, prompt).items()
    ]
    results: list[dict[str, float]] = [{} for _ in prompts]
    collate = datamodule.collate()
    with preserved_modes(model), torch.no_grad():
        model.eval()
        for start in range(0, len(sequences), batch_size):
            chunk = sequences[start : start + batch_size]
            batch = {name: t.to(device) for name, t in collate([example for _, _, example in chunk]).items()}
            values = sequence_log_probabilities(model, batch, temperature).tolist()
            for (index, answer, _), value in zip(chunk, values, strict=True):
                results[index][answer] = value
    return results


def answer_shares(log_probs: dict[str, float]) -> tuple[float, list[float]]:
    """``(log p, [s_a])``: ``log p = logsumexp_a log π(a | x)`` and the shares ``s_a = π(a | x) / p``."""
    values = list(log_probs.values())
    top = max(values)
    log_p = top + math.log(sum(math.exp(v - top) for v in values))
    return log_p, [math.exp(v - log_p) for v in values]


def exact_answer_metrics(log_probs: Sequence[dict[str, float]], ks: Sequence[int]) -> dict[str, float]:
    """``answer_prob``, ``pass@<k>_exact`` for each ``k``, ``answer_coverage``, ``answer_coverage_mass``
    and ``correct_entropy``, means over prompts of :func:`answer_log_probabilities`' output (see the
    module docstring for the formulas)."""
    if not log_probs or not all(log_probs):
        raise ValueError("exact_answer_metrics needs at least one prompt, each with at least one answer")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"exact_answer_metrics: every k must be an integer >= 1 (got {list(ks)})")
    sums = {"answer_prob": 0.0, "answer_coverage": 0.0, "answer_coverage_mass": 0.0, "correct_entropy": 0.0}
    sums.update({f"pass@{k}_exact": 0.0 for k in ks})
    for answers in log_probs:
        log_p, shares = answer_shares(answers)
        p = min(math.exp(log_p), 1.0)  # rounding may carry a sum of probabilities past 1
        entropy = -sum(s * math.log(s) for s in shares if s > 0)
        threshold = COVERAGE_FRACTION_OF_UNIFORM / len(shares)
        sums["answer_prob"] += p
        sums["correct_entropy"] += entropy
        sums["answer_coverage"] += sum(s >= threshold for s in shares) / len(shares)
        sums["answer_coverage_mass"] += math.exp(entropy) / len(shares)
        for k in ks:
            sums[f"pass@{k}_exact"] += -math.expm1(k * math.log1p(-p)) if p < 1 else 1.0
    return {name: total / len(log_probs) for name, total in sums.items()}


def policy_sample_divergences(
    policy: torch.nn.Module, reference: torch.nn.Module, batch: dict[str, Tensor], chunk_rows: int = 0
) -> dict[str, float]:
    """Exact full-vocabulary divergences of ``policy`` (π) from ``reference`` at the labelled positions of a
    right-padded ``batch`` (as :func:`~divergence_lab.methods.lm_generation.completion_batch` builds), with
    ``π_t = softmax(z^π_t)`` and ``r_t = softmax(z^ref_t)`` at T = 1:

    * ``kl_reverse``: mean over labelled tokens of ``KL(π_t‖r_t) = Σ_v π_t(v) (log π_t(v) − log r_t(v))``
      (registry ``rkl``), and ``kl_reverse_seq``: the mean over the batch's sequences of its per-sequence
      sum ``Σ_t KL(π_t‖r_t)``;
    * ``kl_forward``, ``kl_forward_seq``: the same for ``KL(r_t‖π_t)`` (registry ``kl``);
    * ``entropy``: mean over labelled tokens of ``H(π_t) = −Σ_v π_t(v) log π_t(v)``.

    On the policy's own samples, ``kl_reverse_seq`` is an unbiased estimate of the sequence-level
    ``KL(π(·|x)‖ref(·|x))`` (the chain rule of KL). Both models run without gradients in eval mode (their
    modes are given back); ``chunk_rows`` labelled positions are scored at a time (0: all at once).
    """
    device = next(policy.parameters()).device
    batch = {name: t.to(device) for name, t in batch.items()}
    _, mask = shifted_targets(batch["labels"])
    if not mask.any():
        raise ValueError("policy_sample_divergences needs a batch with at least one labelled token")
    with preserved_modes(policy), preserved_modes(reference), torch.no_grad():
        policy.eval()
        reference.eval()
        policy_logits = next_token_predictions(policy, batch, fused=False).logits[mask]
        reference_logits = next_token_predictions(reference, batch, fused=False).logits[mask]
    reverse, forward = divergences.build("rkl"), divergences.build("kl")
    parts: dict[str, list[Tensor]] = {"kl_reverse": [], "kl_forward": [], "entropy": []}
    rows = chunk_rows or policy_logits.shape[0]
    for start in range(0, policy_logits.shape[0], rows):
        pi, ref = policy_logits[start : start + rows], reference_logits[start : start + rows]
        parts["kl_reverse"].append(reverse(pi, ref))
        parts["kl_forward"].append(forward(pi, ref))
        parts["entropy"].append(token_entropy(pi))
    tokens, sequences = int(mask.sum()), batch["labels"].shape[0]
    sums = {name: float(torch.cat(chunks).sum()) for name, chunks in parts.items()}
    result = {name: total / tokens for name, total in sums.items()}
    result.update({f"{name}_seq": sums[name] / sequences for name in ("kl_reverse", "kl_forward")})
    return result


def synthetic_task_of(prompt: str) -> str:
    """The synthetic task a prompt belongs to, from its form: ``multi_answer`` for ``"037<?<042:"`` (the
    bounds' ``<?<`` and a closing ``:``), ``arithmetic`` for ``"012+345="`` (a closing ``=``)."""
    if MULTI_ANSWER_MARK in prompt and prompt.endswith(COLON):
        return "multi_answer"
    if prompt.endswith(EQUALS):
        return "arithmetic"
    raise ValueError(f"{prompt!r} is neither an arithmetic nor a multi-answer prompt of the synthetic tasks")


def task_examples(datamodule: Any, split: str, task: str) -> list[EncodedExample]:
    """The encoded rows of ``split`` whose prompt belongs to ``task`` (``datamodule.rows`` and
    ``datamodule.encoded`` hold the same rows in the same order)."""
    if task not in SYNTHETIC_TASKS:
        raise ConfigError(f"the held-out task must be one of {', '.join(SYNTHETIC_TASKS)} (got {task!r})")
    if split not in datamodule.encoded:
        raise ConfigError(
            f"the held-out split must be one of {', '.join(datamodule.encoded)} (got {split!r})"
        )
    rows, encoded = datamodule.rows[split], datamodule.encoded[split]
    chosen = [
        example for row, example in zip(rows, encoded, strict=True) if synthetic_task_of(row.prompt) == task
    ]
    if not chosen:
        raise ConfigError(
            f"the {split} split has no {task} rows (the held-out task needs data.task=mixed or {task})"
        )
    return chosen


def heldout_nll(
    model: torch.nn.Module, datamodule: Any, split: str, task: str, batch_size: int, device: torch.device
) -> float:
    """Mean NLL per labelled token (completion tokens and eos), ``Σ −log π(y_t | y_<t) / #tokens``, of the
    rows of ``split`` that belong to the synthetic ``task`` (``arithmetic`` or ``multi_answer``), teacher
    forced, without gradients in eval mode (modes given back); ``batch_size`` rows per forward pass."""
    examples = task_examples(datamodule, split, task)
    collate = datamodule.collate()
    total, tokens = 0.0, 0
    with preserved_modes(model), torch.no_grad():
        model.eval()
        for start in range(0, len(examples), batch_size):
            batch = {name: t.to(device) for name, t in collate(examples[start : start + batch_size]).items()}
            total -= float(sequence_log_probabilities(model, batch).sum())
            tokens += int(shifted_targets(batch["labels"])[1].sum())
    return total / tokens
