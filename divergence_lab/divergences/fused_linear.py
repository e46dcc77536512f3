"""Per-token divergences straight from last hidden states and output-projection weights.

    from divergence_lab.divergences import build, fused_linear_divergence
    values = fused_linear_divergence(build("kl", temperature=2.0), h_s, W_s, h_t, W_t, mask=mask)

``values[i]`` equals ``divergence(h_s @ W_sᵀ + c_s, h_t @ W_tᵀ + c_t, mask)[i]`` (same temperature, T²
factor, masking and dtype rules as calling the member on the logits), but the (N, V) logit tensors are
never built: tokens are processed in blocks of ``chunk_rows`` rows and only one block of logits per side
exists at a time. This is what a language-model distillation loss needs, where N · V (tokens × vocabulary)
logits are several GB per side while the hidden states and weights are not.

Math. For token i, z_i = W h_i + c (V logits), a_i = z_s,i / T, b_i = z_t,i / T, v_i = D(a_i, b_i) (the
member's value on scaled logits). With an upstream gradient g_i = ∂L/∂v_i and the member's closed form
δ_i = ∂v_i/∂a_i (``_fused``; members without one differentiate their ``_pointwise`` block by block)::

    ∂L/∂z_s,i = g_i δ_i / T                      (a row of V numbers, one block at a time)
    ∂L/∂h_s,i = (g_i δ_i / T) W_s                (N × H_s, written block by block)
    ∂L/∂W_s   = Σ_i (g_i δ_i / T)ᵀ h_s,i         (V × H_s, accumulated over blocks)
    ∂L/∂c_s   = Σ_i g_i δ_i / T

and the same on the teacher side with ∂v_i/∂b_i, computed only when a teacher input requires a gradient
(a frozen teacher costs its logits and nothing else). When gradients are recorded, forward computes each
block's values and δ_i together and keeps the gradients for g_i = 1: ∂/∂h rows (exact for any g after
scaling row i by g_i) and the sums for W and c. A loss that averages or sums the values (g_i the same for
every kept token, as in every distillation loss) then needs no more products in backward: 4 (N × H × V)
products in all with a trainable student and a frozen teacher, as when the logits are materialised and
kept. Any other g (a per-token weighting) cannot be applied to a sum over tokens after the fact, so
backward then recomputes each block's logits and applies g before accumulating: 6 products. Peak memory
above the inputs: the gradients of the inputs (N × H, V × H), held from forward to backward, plus a few
(chunk_rows × V) blocks.

Work happens in ``torch.promote_types(input dtypes, float32)`` (bf16/fp16 are upcast, float64 stays
float64) with autocast disabled, as in :meth:`Divergence.__call__`. Masked rows are dropped before the
blocks are formed: they get value 0 and zero gradient, and NaN or ±inf in them cannot reach anything.
Only pointwise members are accepted (a row's value must depend on that row only). Not twice
differentiable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from divergence_lab.divergences.base import Divergence, PointwiseDivergence, integer_at_least
from divergence_lab.divergences.fused import TARGET_CHUNK_ELEMENTS, fused_values_and_gradients

__all__ = ["default_linear_chunk_rows", "fused_linear_divergence"]

#: With ``chunk_rows=0`` a block holds about ``TARGET_CHUNK_ELEMENTS`` logits per side, as in the fused
#: path on logits, but at least this many rows: every block reads the whole weight matrix once per product,
#: and the products of blocks of a few rows are memory-bound. Measured at V = 128 000, H = 1024 (kl, one
#: CPU core, CPU time of forward + backward): 512 tokens in blocks of 64, 128, 256 and 512 rows took 21.0,
#: 19.9, 19.3 and 20.0 s (bigger blocks make faster products but fault in more fresh memory per block);
#: 256 tokens in blocks of 16 rows took twice as long as in blocks of 64.
MIN_LINEAR_CHUNK_ROWS = 256

WHY_NOT_POINTWISE = {
    "batch": "its row values depend on the whole batch",
    "ranking": "it needs per-row labels and ranks the classes",
    "labelled": "it needs per-row labels",
}


def default_linear_chunk_rows(vocabulary: int) -> int:
    """Rows per block when ``chunk_rows=0``: about ``TARGET_CHUNK_ELEMENTS`` (2^19) logits, at least
    ``MIN_LINEAR_CHUNK_ROWS`` rows."""
    return max(MIN_LINEAR_CHUNK_ROWS, TARGET_CHUNK_ELEMENTS // max(1, vocabulary))


def fused_linear_divergence(
    divergence: Divergence,
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    mask: Tensor | None = None,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    chunk_rows: int = 0,
) -> Tensor:
    """Per-token values (N,) of ``divergence`` between ``softmax((h_t W_tᵀ + c_t)/T)`` (target) and
    ``softmax((h_s W_sᵀ + c_s)/T)``, computed block by block without (N, V) logits.

    Shapes: ``student_hidden`` (N, H_s), ``student_weight`` (V, H_s), ``teacher_hidden`` (N, H_t),
    ``teacher_weight`` (V, H_t), biases (V,), ``mask`` bool (N,) (False rows: value 0, zero gradient).
    ``chunk_rows``: tokens per block, 0 for :func:`default_linear_chunk_rows`. Gradients flow to every
    input that requires one; pass a detached teacher for a frozen target.
    """
    member = _check_member(divergence)
    rows = integer_at_least(0)("chunk_rows", chunk_rows)
    dtype = _check_tensors(
        student_hidden, student_weight, teacher_hidden, teacher_weight, mask, student_bias, teacher_bias
    )
    inputs = [
        None if t is None else t.to(dtype)
        for t in (student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias)
    ]
    vocabulary = student_weight.shape[0]
    rows = rows or default_linear_chunk_rows(vocabulary)
    records_gradients = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    if mask is None:
        values = _FusedLinearDivergence.apply(*inputs, member, rows, records_gradients)
    else:
        inputs[0], inputs[3] = inputs[0][mask], inputs[3][mask]
        kept = _FusedLinearDivergence.apply(*inputs, member, rows, records_gradients)
        values = kept.new_zeros(mask.shape[0]).masked_scatter(mask, kept)
    if member.t_squared and member.temperature != 1.0:
        values = values * (member.temperature**2)
    return values


class _FusedLinearDivergence(torch.autograd.Function):
    """Forward: values and, when gradients are recorded, the gradients for g = 1, block by block.
    Backward: those gradients scaled by g when g is the same for every row, else the blocks again."""

    @staticmethod
    def forward(
        ctx: Any,
        student_hidden: Tensor,
        student_weight: Tensor,
        student_bias: Tensor | None,
        teacher_hidden: Tensor,
        teacher_weight: Tensor,
        teacher_bias: Tensor | None,
        divergence: PointwiseDivergence,
        chunk_rows: int,
        records_gradients: bool,
    ) -> Tensor:
        ctx.save_for_backward(
            student_hidden, student_weight, student_bias, teacher_hidden, teacher_weight, teacher_bias
        )
        ctx.divergence, ctx.chunk_rows = divergence, chunk_rows
        student = (student_hidden, student_weight, student_bias)
        teacher = (teacher_hidden, teacher_weight, teacher_bias)
        needs = ctx.needs_input_grad if records_gradients else (False,) * 6
        student_grads = _empty_gradients(student, needs[:3])
        teacher_grads = _empty_gradients(teacher, needs[3:6])
        need_student, need_teacher = any(needs[:3]), any(needs[3:6])
        values = student_hidden.new_empty(student_hidden.shape[0])
        with torch.autocast(student_hidden.device.type, enabled=False):
            for block in _blocks(student_hidden.shape[0], chunk_rows):
                values[block], grad_a, grad_b = _block_values_and_gradients(
                    divergence, student, teacher, block, need_student, need_teacher
                )
                if need_student:
                    _accumulate(grad_a, student, block, student_grads)
                if need_teacher:
                    _accumulate(grad_b, teacher, block, teacher_grads)
        ctx.unit_gradients = (*student_grads, *teacher_grads) if records_gradients else None
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_values: Tensor) -> tuple[Tensor | None, ...]:
        unit_gradients, ctx.unit_gradients = ctx.unit_gradients, None
        if unit_gradients is not None and _same_for_every_row(grad_values):
            grads = [_scale_unit_gradient(g, grad_values, i % 3 == 0) for i, g in enumerate(unit_gradients)]
            return (*grads, None, None, None)
        return (*_recomputed_gradients(ctx, grad_values), None, None, None)


def _recomputed_gradients(ctx: Any, grad_values: Tensor) -> tuple[Tensor | None, ...]:
    """The six input gradients for a per-row g: every block's logits again, scaled by g before summing."""
    saved = ctx.saved_tensors
    student, teacher = saved[:3], saved[3:]
    needs = ctx.needs_input_grad
    student_grads = _empty_gradients(student, needs[:3])
    teacher_grads = _empty_gradients(teacher, needs[3:6])
    need_student, need_teacher = any(needs[:3]), any(needs[3:6])
    with torch.autocast(grad_values.device.type, enabled=False):
        for block in _blocks(student[0].shape[0], ctx.chunk_rows):
            _, grad_a, grad_b = _block_values_and_gradients(
                ctx.divergence, student, teacher, block, need_student, need_teacher
            )
            scale = grad_values[block, None]
            if need_student:
                _accumulate(grad_a.mul_(scale), student, block, student_grads)
            if need_teacher:
                _accumulate(grad_b.mul_(scale), teacher, block, teacher_grads)
    return (*student_grads, *teacher_grads)


def _same_for_every_row(grad_values: Tensor) -> bool:
    """Whether the upstream gradient is one number for every row (a mean or a sum of the values)."""
    return grad_values.numel() == 0 or bool((grad_values == grad_values[0]).all())


def _scale_unit_gradient(unit: Tensor | None, grad_values: Tensor, per_row: bool) -> Tensor | None:
    """A forward gradient for g = 1 times the actual g: row by row for hidden states, else by the one g."""
    if unit is None:
        return None
    if grad_values.numel() == 0:
        return unit
    return unit.mul_(grad_values[:, None] if per_row else grad_values[0])


def _blocks(rows: int, chunk_rows: int) -> list[slice]:
    return [slice(start, min(rows, start + chunk_rows)) for start in range(0, rows, chunk_rows)]


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, block: slice) -> Tensor:
    """h[block] Wᵀ + c: one block of logits."""
    logits = hidden[block] @ weight.T
    return logits.add_(bias) if bias is not None else logits


def _block_values_and_gradients(
    divergence: PointwiseDivergence,
    student: tuple[Tensor | None, ...],
    teacher: tuple[Tensor | None, ...],
    block: slice,
    need_student: bool,
    need_teacher: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """v, ∂v/∂z_s and ∂v/∂z_t of one block of tokens (None where not needed), from its logits.

    A block has enough rows for efficient matrix products (``MIN_LINEAR_CHUNK_ROWS``), which at a large
    vocabulary is far more than fits in cache; the member itself runs as on the fused path on logits
    (:func:`~divergence_lab.divergences.fused.fused_values_and_gradients`: its compiled row kernel, or its
    elementwise passes on cache-sized rows of the block), temperature included.
    """
    return fused_values_and_gradients(
        divergence, _logits(*student, block), _logits(*teacher, block), 0, need_student, need_teacher
    )


def _empty_gradients(side: tuple[Tensor | None, ...], needs: tuple[bool, ...]) -> list[Tensor | None]:
    """Gradient buffers of (hidden, weight, bias): hidden rows are written once, the others accumulate."""
    hidden, weight, bias = side
    return [
        torch.empty_like(hidden) if needs[0] else None,
        torch.zeros_like(weight) if needs[1] else None,
        torch.zeros_like(bias) if needs[2] and bias is not None else None,
    ]


def _accumulate(
    grad_logits: Tensor, side: tuple[Tensor | None, ...], block: slice, grads: list[Tensor | None]
) -> None:
    """Add one block's ∂L/∂z (already scaled by g and 1/T) to the hidden, weight and bias gradients."""
    hidden, weight, _ = side
    grad_hidden, grad_weight, grad_bias = grads
    if grad_hidden is not None:
        torch.mm(grad_logits, weight, out=grad_hidden[block])
    if grad_weight is not None:
        grad_weight.addmm_(grad_logits.T, hidden[block])
    if grad_bias is not None:
        grad_bias.add_(grad_logits.sum(dim=0))


# ----------------------------------------------------------------------------------------------------
# Input validation: every error is one line.
# ----------------------------------------------------------------------------------------------------


def _check_member(divergence: Any) -> PointwiseDivergence:
    if not isinstance(divergence, Divergence):
        raise ValueError(
            f"divergence must be a registry member (divergences.build(name)), got {type(divergence).__name__}"
        )
    if not isinstance(divergence, PointwiseDivergence) or divergence.kind != "pointwise":
        why = WHY_NOT_POINTWISE.get(divergence.kind, f"its kind is {divergence.kind!r}")
        raise ValueError(
            f"fused_linear_divergence needs a pointwise divergence; '{divergence.name}' is not: {why}"
        )
    return divergence


def _check_tensors(
    student_hidden: Any,
    student_weight: Any,
    teacher_hidden: Any,
    teacher_weight: Any,
    mask: Any,
    student_bias: Any,
    teacher_bias: Any,
) -> torch.dtype:
    """Validate shapes, dtypes and devices; return the compute dtype."""
    named = {
        "student_hidden": student_hidden,
        "student_weight": student_weight,
        "teacher_hidden": teacher_hidden,
        "teacher_weight": teacher_weight,
    }
    optional = {"student_bias": student_bias, "teacher_bias": teacher_bias}
    for label, t in {**named, **optional}.items():
        if t is None and label in optional:
            continue
        if not isinstance(t, Tensor):
            raise ValueError(f"{label} must be a torch.Tensor (got {type(t).__name__})")
        if not t.is_floating_point():
            raise ValueError(f"{label} must have a floating dtype, got {t.dtype}")
        expected = 1 if label in optional else 2
        if t.ndim != expected:
            raise ValueError(f"{label} must be {expected}-D, got shape {tuple(t.shape)}")
    for side, hidden, weight in (
        ("student", student_hidden, student_weight),
        ("teacher", teacher_hidden, teacher_weight),
    ):
        if hidden.shape[1] != weight.shape[1]:
            raise ValueError(
                f"{side}_hidden (N, H) and {side}_weight (V, H) disagree on H: "
                f"{tuple(hidden.shape)} and {tuple(weight.shape)}"
            )
    if student_hidden.shape[0] != teacher_hidden.shape[0]:
        raise ValueError(
            f"student_hidden and teacher_hidden must have the same number of rows, got "
            f"{student_hidden.shape[0]} and {teacher_hidden.shape[0]}"
        )
    vocabulary = student_weight.shape[0]
    if teacher_weight.shape[0] != vocabulary or vocabulary < 1:
        raise ValueError(
            f"student_weight and teacher_weight must have the same number (>= 1) of rows (vocabulary), got "
            f"{vocabulary} and {teacher_weight.shape[0]}"
        )
    for label, bias in optional.items():
        if bias is not None and bias.shape[0] != vocabulary:
            raise ValueError(f"{label} must have shape ({vocabulary},), got {tuple(bias.shape)}")
    present = [t for t in (*named.values(), *optional.values()) if t is not None]
    device = student_hidden.device
    if any(t.device != device for t in present):
        raise ValueError(f"all inputs must be on one device, got {sorted({str(t.device) for t in present})}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            what = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of shape (N,), got {what}")
        if mask.shape != student_hidden.shape[:1]:
            raise ValueError(f"mask must have shape ({student_hidden.shape[0]},), got {tuple(mask.shape)}")
        if mask.device != device:
            raise ValueError(f"mask on {mask.device} but hidden states on {device}")
    dtype = torch.float32
    for t in present:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype
