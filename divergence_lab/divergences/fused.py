"""Chunked, fused execution of pointwise members, for vocabulary-sized class counts: an optimisation of
their ``_pointwise``, which stays the definition (pinned to it by
``tests/divergences/test_fused.py::test_fused_matches_plain_autograd``; the order in which a call tries
the paths is written out in :mod:`divergence_lab.divergences.named`).

Plain autograd keeps every intermediate of the (N, C) computation alive until backward: several (N, C)
tensors at once, which at LLM scale (N = thousands of tokens, C = 32k-150k) is both the slowest part of a
step and the one that runs out of memory. The fused path instead walks over blocks of ``chunk_rows`` rows
and, inside the forward pass, computes each block's values *and* the gradients of those values with
respect to both inputs, writing the gradients into preallocated (N, C) tensors (the student's from a
reused buffer, :mod:`divergence_lab.divergences.buffers`). Backward then only scales the stored gradients
by the incoming per-row gradient, in place. Peak extra memory: one gradient tensor per input that requires
grad, plus O(chunk_rows · C) work space.

Members with a closed-form gradient implement ``_fused(a, b, need_a, need_b) -> (value, grad_a, grad_b)``
where a = student/T and b = teacher/T (scaled logits, one block of rows); the gradients are ∂value/∂a and
∂value/∂b, each computed only when needed (None otherwise): a frozen teacher costs nothing extra.
``kl``, ``rkl``, ``js``, ``tv``, ``hellinger``, ``gjs``, ``skl``, ``srkl``, ``alpha``, ``chi2``,
``neyman_chi2`` and ``cs`` do (formulas in their ``_fused`` docstrings; the first five and the two χ²
also have compiled CPU row kernels, :mod:`divergence_lab.divergences.kernels`). ``fdiv`` (any generator),
``sinkhorn`` and ``sinkhorn_div`` run their own ``_pointwise`` under autograd block by block, which gives
the same memory profile and the same numbers as the plain path.

This module knows members only through :class:`FusedMember`, what it needs of them; the registry's
:class:`~divergence_lab.divergences.base.PointwiseDivergence` is one, and calls :func:`fused_call`.

Exactness: a row's value depends on that row only, so d(Σ_i g_i v_i)/dx_i = g_i · dv_i/dx_i and storing
dv_i/dx_i per row is exact. Masking, the T² factor and the dtype rules stay in :class:`Divergence.__call__`.
The fused path is not twice differentiable (``once_differentiable``).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from divergence_lab.divergences.buffers import gradient_buffer
from divergence_lab.divergences.kernels import row_kernel

#: With ``chunk_rows=0`` a block holds about this many elements (2 MiB of float32: fits in L2 cache).
TARGET_CHUNK_ELEMENTS = 1 << 19
MIN_CHUNK_ROWS = 8


class FusedMember(Protocol):
    """A pointwise member as the fused path sees it: its name and temperature, its definition
    ``_pointwise(log_p, log_q)``, and its closed form ``_fused`` where ``has_closed_form()`` says it has one.
    """

    name: str
    temperature: float

    def has_closed_form(self) -> bool: ...

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor: ...

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]: ...


def default_chunk_rows(num_classes: int) -> int:
    """Rows per block when ``chunk_rows=0``: about ``TARGET_CHUNK_ELEMENTS`` elements, at least
    ``MIN_CHUNK_ROWS`` rows."""
    return max(MIN_CHUNK_ROWS, TARGET_CHUNK_ELEMENTS // max(1, num_classes))


def softmax_and_log(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(softmax(x), log_softmax(x))`` along the last dim with a single ``exp`` pass (two new tensors)."""
    shifted = x - x.amax(dim=-1, keepdim=True)
    probs = shifted.exp()
    total = probs.sum(dim=-1, keepdim=True)
    return probs.div_(total), shifted.sub_(total.log_())


def row_dot(x: Tensor, y: Tensor) -> Tensor:
    """Σ_k x_k y_k per row, without materialising the product."""
    return torch.linalg.vecdot(x, y)


def centred(probs: Tensor, g: Tensor) -> Tensor:
    """Chain rule through softmax: ∂/∂x_j of a function with ∂/∂probs = g is probs_j (g_j − ⟨probs, g⟩)."""
    return (g - row_dot(probs, g)[:, None]).mul_(probs)


class _FusedPointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, student: Tensor, teacher: Tensor, divergence: FusedMember, chunk_rows: int):
        need_student, need_teacher = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        out = gradient_buffer(student) if need_student else None
        values, grad_student, grad_teacher = fused_values_and_gradients(
            divergence, student, teacher, chunk_rows, need_student, need_teacher, out
        )
        ctx.save_for_backward(grad_student, grad_teacher)
        return values

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_values: Tensor):
        grad_student, grad_teacher = ctx.saved_tensors
        scale = grad_values[:, None]
        return (
            grad_student.mul_(scale) if grad_student is not None else None,
            grad_teacher.mul_(scale) if grad_teacher is not None else None,
            None,
            None,
        )


def fused_values_and_gradients(
    divergence: FusedMember,
    student: Tensor,
    teacher: Tensor,
    chunk_rows: int,
    need_student: bool = True,
    need_teacher: bool = True,
    student_gradient: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-row values and their gradients w.r.t. ``student`` / ``teacher`` logits: in one call of the
    member's compiled row kernel (:mod:`~divergence_lab.divergences.kernels`) where there is one and the
    teacher needs no gradient, else block by block with the member's ``_fused`` where it has one, else with
    its ``_pointwise`` under autograd. ``student_gradient``: a contiguous tensor shaped like ``student``
    to write ∂/∂student into (default: a new one)."""
    if need_student and student_gradient is None:
        student_gradient = torch.empty_like(student, memory_format=torch.contiguous_format)
    grad_student = student_gradient if need_student else None
    kernel = None if need_teacher else row_kernel(divergence.name, student, teacher, divergence)
    if kernel is not None:
        student, teacher = student.contiguous(), teacher.contiguous()
        return kernel(student, teacher, divergence.temperature, grad_student), grad_student, None
    n, c = student.shape
    rows = chunk_rows or default_chunk_rows(c)
    temperature = divergence.temperature
    values = torch.empty(n, dtype=student.dtype, device=student.device)
    grad_teacher = torch.empty_like(teacher) if need_teacher else None
    analytic = divergence.has_closed_form()
    for start in range(0, n, rows):
        block = slice(start, min(n, start + rows))
        a = student[block] / temperature if temperature != 1.0 else student[block]
        b = teacher[block] / temperature if temperature != 1.0 else teacher[block]
        if analytic:
            value, grad_a, grad_b = divergence._fused(a, b, need_student, need_teacher)
        else:
            value, grad_a, grad_b = _autograd_block(divergence, a, b, need_student, need_teacher)
        values[block] = value
        for grad, out in ((grad_a, grad_student), (grad_b, grad_teacher)):
            if out is not None:
                out[block] = grad if temperature == 1.0 else grad.div_(temperature)
    return values, grad_student, grad_teacher


def _autograd_block(
    divergence: FusedMember, a: Tensor, b: Tensor, need_a: bool, need_b: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """A member without a closed form: its own ``_pointwise`` differentiated on one block of rows."""
    with torch.enable_grad():
        a = a.detach().requires_grad_(need_a)
        b = b.detach().requires_grad_(need_b)
        value = divergence._pointwise(torch.log_softmax(b, dim=-1), torch.log_softmax(a, dim=-1))
        wanted = [x for x in (a, b) if x.requires_grad]
        grads = iter(torch.autograd.grad(value.sum(), wanted, allow_unused=True) if wanted else [])
    grad_a = next(grads) if need_a else None
    grad_b = next(grads) if need_b else None
    grad_a = torch.zeros_like(a) if need_a and grad_a is None else grad_a
    grad_b = torch.zeros_like(b) if need_b and grad_b is None else grad_b
    return value.detach(), grad_a, grad_b


def fused_call(divergence: FusedMember, student: Tensor, teacher: Tensor, chunk_rows: int) -> Tensor:
    """Values of ``divergence`` (before T² and masking) through the fused autograd Function."""
    return _FusedPointwise.apply(student, teacher, divergence, chunk_rows)
