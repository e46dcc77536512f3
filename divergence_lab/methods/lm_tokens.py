"""Per-token quantities of causal language models on a batch: NLL of the labelled tokens, and a registry
divergence between a student's and a teacher's next-token distributions.

A batch is the text data's dict (``input_ids``, ``attention_mask``, ``labels`` aligned with ``input_ids``,
-100 where there is no loss). The model's prediction at position ``t`` scores token ``t + 1``, so the rows
are positions ``0 .. L-2`` of every sequence, flattened to ``N = B (L - 1)`` rows, and the targets are
``labels[:, 1:]``; a row counts (``mask``) where its target is not -100.

Two ways to hold the predictions (:class:`NextTokenPredictions`):

* the logits, ``(N, V)`` (the registry member then picks its own plain or chunked path);
* on the fused path, the last hidden states ``(N, H)`` and the output projection ``(V, H)`` (+ bias),
  never multiplied out as a whole: the divergence is
  :func:`~divergence_lab.divergences.fused_linear.fused_linear_divergence` and the NLL is computed in
  blocks of rows whose logits are recomputed in backward (:func:`blockwise_nll`). This is what large
  vocabularies need, where ``N × V`` logits per model are several GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from divergence_lab.data.text.batches import IGNORE_INDEX
from divergence_lab.divergences import Divergence, fused_linear_divergence
from divergence_lab.divergences.fused_linear import default_linear_chunk_rows


@dataclass
class NextTokenPredictions:
    """A model's next-token predictions for ``N`` rows: ``logits`` (N, V), or ``hidden`` (N, H) with the
    output projection ``weight`` (V, H) and ``bias`` (V,) or None."""

    logits: Tensor | None = None
    hidden: Tensor | None = None
    weight: Tensor | None = None
    bias: Tensor | None = None

    @property
    def fused(self) -> bool:
        return self.logits is None


def next_token_predictions(
    model: torch.nn.Module, batch: dict[str, Tensor], fused: bool
) -> NextTokenPredictions:
    """The predictions of ``model`` at positions ``0 .. L-2`` of ``batch``, flattened to ``B (L - 1)`` rows:
    logits, or with ``fused`` the last hidden states of the base model and the output projection."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if not fused:
        logits = model(**inputs).logits[:, :-1]
        return NextTokenPredictions(logits=logits.reshape(-1, logits.shape[-1]))
    hidden = model.base_model(**inputs).last_hidden_state[:, :-1]
    head = model.get_output_embeddings()
    return NextTokenPredictions(
        hidden=hidden.reshape(-1, hidden.shape[-1]), weight=head.weight, bias=getattr(head, "bias", None)
    )


def detached(predictions: NextTokenPredictions) -> NextTokenPredictions:
    """The same predictions cut from the graph (a frozen target)."""
    parts = (predictions.logits, predictions.hidden, predictions.weight, predictions.bias)
    return NextTokenPredictions(*(None if t is None else t.detach() for t in parts))


def shifted_targets(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(targets, mask)`` of the rows: ``labels[:, 1:]`` flattened, and where they are not -100."""
    targets = labels[:, 1:].reshape(-1)
    return targets, targets != IGNORE_INDEX


def token_nll(
    predictions: NextTokenPredictions, targets: Tensor, mask: Tensor, chunk_rows: int = 0
) -> Tensor:
    """``-log q(target)`` per row (N,), 0 where ``mask`` is False; in float32 at least."""
    safe = torch.where(mask, targets, torch.zeros_like(targets))
    if not predictions.fused:
        logits = predictions.logits
        values = F.cross_entropy(
            logits.to(torch.promote_types(logits.dtype, torch.float32)), safe, reduction="none"
        )
        return torch.where(mask, values, torch.zeros_like(values))
    kept = blockwise_nll(
        predictions.hidden[mask], predictions.weight, predictions.bias, safe[mask], chunk_rows
    )
    return kept.new_zeros(mask.shape[0]).masked_scatter(mask, kept)


def labelled_log_probs(predictions: NextTokenPredictions, labels: Tensor, chunk_rows: int = 0) -> Tensor:
    """``log q(y_t)`` of each sequence's labelled tokens as (B, L − 1) (0 at the other positions): the
    negated :func:`token_nll` on the batch's shifted ``labels`` (B, L), one row per sequence. Summed over a
    row it is the log-probability of the sequence's completion."""
    targets, mask = shifted_targets(labels)
    return -token_nll(predictions, targets, mask, chunk_rows).view(labels.shape[0], -1)


def token_entropy(logits: Tensor) -> Tensor:
    """``H(q_i) = −Σ_v q_i(v) log q_i(v)`` per row of (N, V) logits, (N,), in float32 at least."""
    log_q = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return -(log_q.exp() * log_q).sum(dim=-1)


def blockwise_nll(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk_rows: int = 0
) -> Tensor:
    """``cross_entropy(hidden @ weightᵀ + bias, targets)`` per row, one block of ``chunk_rows`` rows at a time
    (0: about 2^23 logits per block); each block's logits are recomputed in backward instead of kept."""
    rows = chunk_rows or default_linear_chunk_rows(weight.shape[0])
    blocks = [
        checkpoint(
            _block_nll,
            hidden[start : start + rows],
            weight,
            bias,
            targets[start : start + rows],
            use_reentrant=False,
        )
        for start in range(0, hidden.shape[0], rows)
    ]
    return torch.cat(blocks) if blocks else hidden.new_zeros(0, dtype=torch.float32)


def _block_nll(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
    logits = F.linear(hidden, weight, bias)
    return F.cross_entropy(
        logits.to(torch.promote_types(logits.dtype, torch.float32)), targets, reduction="none"
    )


def token_divergence(
    divergence: Divergence,
    student: NextTokenPredictions,
    teacher: NextTokenPredictions,
    mask: Tensor,
    chunk_rows: int = 0,
) -> Tensor:
    """``D(student_i, teacher_i)`` per row (N,) (teacher = target), 0 where ``mask`` is False: the registry
    member on the logits, or its fused linear form on hidden states and output projections."""
    if not student.fused:
        return divergence(student.logits, teacher.logits, mask=mask)
    return fused_linear_divergence(
        divergence,
        student.hidden,
        student.weight,
        teacher.hidden,
        teacher.weight,
        mask=mask,
        student_bias=student.bias,
        teacher_bias=teacher.bias,
        chunk_rows=chunk_rows,
    )


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the rows where ``mask`` holds (0 when none does)."""
    return values.sum() / mask.sum().clamp_min(1)
