"""Pointwise divergences of the KL family and simple f-divergences between class distributions.

Holds ``kl``, ``rkl``, ``js``, ``gjs``, ``skl``, ``srkl``, ``tv``, ``hellinger``, ``chi2`` and
``neyman_chi2``. The Amari ``alpha`` family, the generic ``fdiv`` and Cauchy-Schwarz ``cs`` live in
:mod:`divergence_lab.divergences.parametric`; the optimal-transport members in
:mod:`divergence_lab.divergences.transport`.

Conventions shared by every member here: ``p = softmax(teacher / T)`` is the target, ``q = softmax(student /
T)`` the distribution being trained, inputs are (N, C) logits and the output is a (N,) tensor of per-row
values (multiplied by T² when ``t_squared``). Directions follow: ``kl`` is KL(p‖q) = KL(teacher‖student),
``rkl`` is KL(q‖p) = KL(student‖teacher). Everything is computed from ``log_softmax`` outputs, which are
finite for finite logits, so no ``0 * log 0`` or ``0 * inf`` product can appear: a probability only ever
multiplies a finite log-difference.

One call, top to bottom
-----------------------
``build("kl", temperature=2.0)(student_logits, teacher_logits, mask)`` on (N, C) logits runs:

1. ``Divergence.__call__`` (:mod:`~divergence_lab.divergences.base`): checks the inputs, moves both to the
   compute dtype (at least float32), turns autocast off, calls ``_compute``, multiplies by T² when
   ``t_squared`` and sets masked rows to 0.
2. ``PointwiseDivergence._compute`` (base): replaces masked rows by zero logits, then takes one of two
   paths, chosen by the member's ``execution`` and ``chunk_rows`` (``conf/divergence/<name>.yaml``:
   ``execution: auto | fused | plain``, ``chunk_rows: 0``):

   * plain (``plain``, or ``auto`` below N · C = 2^22, ``base.AUTO_FUSED_ELEMENTS``):
     ``log_p = log_softmax(teacher / T)``, ``log_q = log_softmax(student / T)``, the value is the member's
     ``_pointwise(log_p, log_q)`` and autograd gives the gradient. ``_pointwise`` is the definition: the
     equation in a member's docstring is the one its ``_pointwise`` computes.
   * fused (``fused``, or ``auto`` from 2^22): :func:`~divergence_lab.divergences.fused.fused_call`
     computes the values and their gradients inside forward (backward only scales the gradients), with
     the first of these that applies:

     a. the compiled row kernel (``kernels/fused_rows.cpp``) of ``kl``, ``rkl``, ``js``, ``tv``,
        ``hellinger``, ``chi2`` or ``neyman_chi2``, when the teacher needs no gradient and the logits are
        CPU float32 / float64: all rows in one call;
     b. the member's closed form ``_fused(a, b, need_a, need_b)`` on a = student/T and b = teacher/T, in
        blocks of ``chunk_rows`` rows (0: about 2^19 elements a block);
     c. its own ``_pointwise`` under autograd, in the same blocks (``fdiv``, ``sinkhorn``,
        ``sinkhorn_div``: no closed form).

3. :func:`~divergence_lab.divergences.fused_linear.fused_linear_divergence` (language models) enters the
   fused path from hidden states and output weights instead of logits, and takes the same a, b or c.

Each ``_fused`` and each row kernel is an optimisation of ``_pointwise``: the same values and gradients,
in less time or memory. Each is pinned to ``_pointwise`` (``execution="plain"``, float64) by a test in
``tests/divergences/``:

* every ``_fused`` (here and in :mod:`~divergence_lab.divergences.parametric`), and path c:
  ``test_fused.py::test_fused_matches_plain_autograd``, with both inputs trained so that the closed form
  runs, not a kernel (``test_the_members_with_a_closed_form_run_it_on_the_fused_path`` checks that it
  does);
* every row kernel: ``test_row_kernels.py::test_kernel_values_and_gradients_equal_plain_autograd``
  (``test_kernel_equals_the_closed_form_in_float64`` also holds it to ``_fused`` at 1e-12);
* the reused gradient buffer of the fused path (frozen teacher):
  ``test_gradient_buffers.py::test_a_consumed_gradient_buffer_is_reused_and_the_gradients_stay_exact``;
* ``fused_linear_divergence``:
  ``test_fused_linear.py::test_every_pointwise_member_matches_the_materialised_logits``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from divergence_lab.divergences.base import Param, PointwiseDivergence, number_in, register
from divergence_lab.divergences.fused import centred, row_dot, softmax_and_log

LOG2 = math.log(2.0)


def kl_from_logs(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a‖b) = Σ a (log a − log b) per row, from finite log-probabilities."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def log_mixture(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(w·a + (1−w)·b) computed with logaddexp; w = 0 and w = 1 return the exact endpoint."""
    if weight_a <= 0.0:
        return log_b
    if weight_a >= 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def _unit_interval(doc: str, default: float) -> Param:
    return Param(default, number_in(0.0, 1.0), doc)


@register("kl")
class ForwardKL(PointwiseDivergence):
    """Forward KL, KL(teacher‖student) = KL(p‖q) = Σ_k p_k (log p_k − log q_k): classic Hinton KD.

    Direction: p (teacher) is the reference, so q must cover every class where p has mass
    (mass-covering / zero-avoiding). Range [0, ∞). Shapes: (N, C) logits -> (N,).
    Stability: computed as Σ exp(log p)·(log p − log q) from log-softmax outputs; a class with p = 0 after
    underflow contributes exactly 0, and log q stays finite, so values and gradients are finite even for
    logits of magnitude 1e4 at T = 0.1 (the value itself can then be ~1e5·T²).
    """

    symmetric = False
    mode = "mass-covering"
    bounded = False

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return kl_from_logs(log_p, log_q)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        ∂/∂a = q − p;  ∂/∂b = p ⊙ (log p − log q − KL)."""
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        log_ratio = log_p.sub_(log_q)
        value = row_dot(p, log_ratio)
        grad_b = log_ratio.sub_(value[:, None]).mul_(p) if need_b else None
        return value, q.sub_(p) if need_a else None, grad_b


@register("rkl")
class ReverseKL(PointwiseDivergence):
    """Reverse KL, KL(student‖teacher) = KL(q‖p) = Σ_k q_k (log q_k − log p_k) (CTS, MiniLLM).

    Direction: the student q is the reference, so q is pushed to put its mass on the teacher's largest
    modes (mode-seeking / zero-forcing). Range [0, ∞). Shapes: (N, C) -> (N,).
    Stability: as ``kl`` with the roles swapped (Σ exp(log q)·(log q − log p)).
    """

    symmetric = False
    mode = "mode-seeking"
    bounded = False

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return kl_from_logs(log_q, log_p)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        ∂/∂a = q ⊙ (log q − log p − KL);  ∂/∂b = p − q."""
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        log_ratio = log_q.sub_(log_p)
        value = row_dot(q, log_ratio)
        grad_b = p - q if need_b else None
        grad_a = log_ratio.sub_(value[:, None]).mul_(q) if need_a else None
        return value, grad_a, grad_b


@register("js")
class JensenShannon(PointwiseDivergence):
    """Jensen-Shannon divergence, JS = ½KL(p‖m) + ½KL(q‖m) with m = ½(p + q), natural log.

    Direction: symmetric in p and q, neither mass-covering nor mode-seeking. Range [0, log 2]; gradients
    vanish when p and q have disjoint supports. Shapes: (N, C) -> (N,).
    Stability: log m = logaddexp(log p, log q) − log 2, so log p − log m ≤ log 2 is always finite.
    """

    symmetric = True
    mode = "neither"
    bounded = True

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        log_m = torch.logaddexp(log_p, log_q) - LOG2
        return 0.5 * (kl_from_logs(log_p, log_m) + kl_from_logs(log_q, log_m))

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With g = ½(log q − log m), h = ½(log p − log m): ∂/∂a = q ⊙ (g − ⟨q, g⟩), ∂/∂b = p ⊙ (h − ⟨p, h⟩).

        log m = log(½(p + q)) from the probabilities; where both underflow to 0 it is floored at the
        smallest normal number, which only ever multiplies a zero probability.
        """
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        log_m = torch.add(p, q).mul_(0.5).clamp_min_(torch.finfo(p.dtype).tiny).log_()
        g = log_q.sub_(log_m).mul_(0.5)
        h = log_p.sub_(log_m).mul_(0.5)
        value = row_dot(q, g) + row_dot(p, h)
        return value, centred(q, g) if need_a else None, centred(p, h) if need_b else None


@register("gjs")
class GeneralizedJS(PointwiseDivergence):
    """Generalised (skewed) Jensen-Shannon divergence of TRL's GKD, parameter β in [0, 1] (default 0.5).

    m_β = β p + (1−β) q and JSD_β = β KL(p‖m_β) + (1−β) KL(q‖m_β). β = ½ gives ``js``. At β = 0 and β = 1
    that formula is identically 0, so (as TRL does) the endpoints are defined explicitly: β = 0 → KL(p‖q)
    (forward) and β = 1 → KL(q‖p) (reverse). They are the limits of the *normalised* value:
    JSD_β/β → KL(p‖q) as β → 0 and JSD_β/(1−β) → KL(q‖p) as β → 1 (the raw JSD_β itself tends to 0, so
    the value jumps at the endpoints). Small β behaves forward-KL-like, large β reverse-KL-like.
    Convention pinned: β weights the *teacher* p in the mixture (older TRL versions mixed the other way).
    Range [0, h(β)] with h the binary entropy of β (≤ log 2) for 0 < β < 1. Shapes: (N, C) -> (N,).
    Stability: log m_β = logaddexp(log p + log β, log q + log(1−β)), finite for finite logits.
    """

    symmetric = False
    mode = "neither"
    bounded = True
    param_specs: ClassVar[dict[str, Param]] = {
        "beta": _unit_interval("mixture weight of the teacher p; 0 -> KL(p‖q), 1 -> KL(q‖p)", 0.5),
    }
    beta: float

    def _setup(self) -> None:
        self.symmetric = self.beta == 0.5
        self.bounded = 0.0 < self.beta < 1.0
        if self.beta == 0.0:
            self.mode = "mass-covering"
        elif self.beta == 1.0:
            self.mode = "mode-seeking"

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        b = self.beta
        if b == 0.0:
            return kl_from_logs(log_p, log_q)
        if b == 1.0:
            return kl_from_logs(log_q, log_p)
        log_m = log_mixture(log_p, log_q, b)
        return b * kl_from_logs(log_p, log_m) + (1.0 - b) * kl_from_logs(log_q, log_m)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With m = βp + (1−β)q, g = (1−β)(log q − log m), h = β(log p − log m): value = ⟨q, g⟩ + ⟨p, h⟩,
        ∂/∂a = q ⊙ (g − ⟨q, g⟩), ∂/∂b = p ⊙ (h − ⟨p, h⟩). (∂value/∂q_k = (1−β)(log q_k − log m_k) +
        (1−β)(1 − (βp_k + (1−β)q_k)/m_k), whose second term is 0; likewise for p.) β = 0 and 1: kl, rkl."""
        if self.beta == 0.0:
            return ForwardKL._fused(self, a, b, need_a, need_b)
        if self.beta == 1.0:
            return ReverseKL._fused(self, a, b, need_a, need_b)
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        log_m = log_mixture(log_p, log_q, self.beta)
        g = log_q.sub_(log_m).mul_(1.0 - self.beta)
        h = log_p.sub_(log_m).mul_(self.beta)
        value = row_dot(q, g) + row_dot(p, h)
        return value, centred(q, g) if need_a else None, centred(p, h) if need_b else None


@register("skl")
class SkewKL(PointwiseDivergence):
    """Skew forward KL of DistiLLM, SKL_α = KL(p ‖ α p + (1−α) q), α in [0, 1] (default 0.1).

    Direction: forward (teacher p is the reference), mass-covering. α = 0 gives ``kl``; α = 1 gives 0.
    Range [0, log(1/α)] for α > 0 (unbounded at α = 0). The mixture keeps the ratio p/m ≤ 1/α, which
    smooths gradients where q ≈ 0. Shapes: (N, C) -> (N,).
    Stability: log of the mixture via logaddexp of log-probabilities plus log α, log(1−α).
    """

    symmetric = False
    mode = "mass-covering"
    bounded = True
    param_specs: ClassVar[dict[str, Param]] = {
        "alpha": _unit_interval("weight of p inside the student-side mixture; 0 -> kl", 0.1),
    }
    alpha: float

    def _setup(self) -> None:
        self.bounded = self.alpha > 0.0

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return kl_from_logs(log_p, log_mixture(log_p, log_q, self.alpha))

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With m = αp + (1−α)q and r = pq/m (≤ p/(1−α), never overflowing where q underflows):
        ∂value/∂q_k = −(1−α)p_k/m_k, so ∂/∂a = q ⊙ (g − ⟨q, g⟩) = (1−α)(q Σr − r);
        ∂value/∂p_k = log p_k − log m_k + 1 − αp_k/m_k, so ∂/∂b = p ⊙ (h − ⟨p, h⟩), h = log(p/m) − αp/m."""
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        log_m = log_mixture(log_p, log_q, self.alpha)
        log_ratio = log_p - log_m
        value = row_dot(p, log_ratio)
        grad_a = None
        if need_a:
            r = (log_p + log_q).sub_(log_m).exp_()
            grad_a = q.mul_(r.sum(-1, keepdim=True)).sub_(r).mul_(1.0 - self.alpha)
        grad_b = centred(p, log_ratio - self.alpha * log_ratio.exp()) if need_b else None
        return value, grad_a, grad_b


@register("srkl")
class SkewReverseKL(PointwiseDivergence):
    """Skew reverse KL of DistiLLM, SRKL_α = KL(q ‖ (1−α) p + α q), α in [0, 1] (default 0.1).

    Direction: reverse (student q is the reference), mode-seeking. α = 0 gives ``rkl``; α = 1 gives 0.
    Range [0, log(1/α)] for α > 0 (unbounded at α = 0). Shapes: (N, C) -> (N,).
    Stability: as ``skl``.
    """

    symmetric = False
    mode = "mode-seeking"
    bounded = True
    param_specs: ClassVar[dict[str, Param]] = {
        "alpha": _unit_interval("weight of q inside the teacher-side mixture; 0 -> rkl", 0.1),
    }
    alpha: float

    def _setup(self) -> None:
        self.bounded = self.alpha > 0.0

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return kl_from_logs(log_q, log_mixture(log_q, log_p, self.alpha))

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With m = (1−α)p + αq and r = pq/m: ∂value/∂q_k = log q_k − log m_k + 1 − αq_k/m_k, so
        ∂/∂a = q ⊙ (g − ⟨q, g⟩), g = log(q/m) − αq/m; ∂value/∂p_k = −(1−α)q_k/m_k, so
        ∂/∂b = (1−α)(p Σr − r)."""
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        log_m = log_mixture(log_q, log_p, self.alpha)
        log_ratio = log_q - log_m
        value = row_dot(q, log_ratio)
        grad_a = centred(q, log_ratio - self.alpha * log_ratio.exp()) if need_a else None
        grad_b = None
        if need_b:
            r = (log_p + log_q).sub_(log_m).exp_()
            grad_b = p.mul_(r.sum(-1, keepdim=True)).sub_(r).mul_(1.0 - self.alpha)
        return value, grad_a, grad_b


@register("tv")
class TotalVariation(PointwiseDivergence):
    """Total variation distance, TV = ½ Σ_k |p_k − q_k|.

    Direction: symmetric, neither covering nor seeking; equals OT with the 0-1 ground cost. Range [0, 1].
    Shapes: (N, C) -> (N,).
    Stability: differences of probabilities (no logs involved). Non-smooth where p_k = q_k: the
    sub-gradient used there is 0 (``torch.abs``), which is finite and fine for SGD.
    """

    symmetric = True
    mode = "neither"
    bounded = True

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With s = sign(p − q) (0 where equal, as autograd's ``abs``): ∂/∂a = q ⊙ (−s/2 − ⟨q, −s/2⟩), ∂/∂b
        = p ⊙ (s/2 − ⟨p, s/2⟩)."""
        q, _ = softmax_and_log(a)
        p, _ = softmax_and_log(b)
        difference = p - q
        value = 0.5 * difference.abs().sum(-1)
        half_sign = difference.sign_().mul_(0.5)
        grad_a = centred(q, -half_sign) if need_a else None
        return value, grad_a, centred(p, half_sign) if need_b else None


@register("hellinger")
class Hellinger(PointwiseDivergence):
    """Squared Hellinger distance, H²(p, q) = ½ Σ_k (√p_k − √q_k)² = 1 − Σ_k √(p_k q_k).

    Normalisation: the ½ convention (range [0, 1]); some papers drop the ½ (that is ``fdiv`` with the
    ``hellinger`` generator, = 2H²) and the Amari α = 0 member equals 4H². Direction: symmetric, midway
    between forward and reverse KL. Shapes: (N, C) -> (N,).
    Stability: the Bhattacharyya coefficient is exp(logsumexp(½ log p + ½ log q)); the value is
    −expm1(·) (accurate near p = q) clamped at 0, so there is no sqrt of 0 and no cancellation blow-up.
    """

    symmetric = True
    mode = "neither"
    bounded = True

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        log_bc = torch.logsumexp(0.5 * (log_p + log_q), dim=-1)
        return (-torch.expm1(log_bc)).clamp_min(0.0)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With r = √(pq) and BC = Σ r: ∂/∂a = −½(r − q·BC), ∂/∂b = −½(r − p·BC) (0 where clamped)."""
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        root = log_p.add_(log_q).mul_(0.5).exp_()
        log_bc = root.sum(-1).log()
        value = (-torch.expm1(log_bc)).clamp_min(0.0)
        active = (value > 0).to(root.dtype)[:, None] * -0.5
        bc = log_bc.exp()[:, None]
        grad_a = (root - q * bc).mul_(active) if need_a else None
        grad_b = root.sub_(p.mul_(bc)).mul_(active) if need_b else None
        return value, grad_a, grad_b


def _min_prob_param() -> Param:
    return Param(1e-6, number_in(0.0, 1.0, low_open=True, high_open=True), "floor of the χ² denominator")


@register("chi2")
class PearsonChi2(PointwiseDivergence):
    """Pearson χ² divergence, χ²_P(p‖q) = Σ_k (p_k − q_k)² / q_k.

    Direction: forward (student q in the denominator), strongly mass-covering: it blows up where q ≈ 0
    while p > 0. Range [0, ∞) mathematically; with the clamp below at most about 1/min_prob.
    Shapes: (N, C) -> (N,).
    Stability: the denominator is max(q_k, min_prob) (parameter ``min_prob``, default 1e-6, in (0, 1)).
    The form Σ (p−q)²/max(q, min_prob) is exact when nothing is clamped and non-negative always; clamped
    classes still pass gradient through the numerator. The loss is heavy-tailed: gradient clipping is
    advisable.
    """

    symmetric = False
    mode = "mass-covering"
    bounded = False
    param_specs: ClassVar[dict[str, Param]] = {"min_prob": _min_prob_param()}
    min_prob: float

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        p, q = log_p.exp(), log_q.exp()
        return ((p - q).square() / q.clamp_min(self.min_prob)).sum(-1)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        See :func:`clamped_chi2`, with q in the denominator."""
        q, p = torch.softmax(a, dim=-1), torch.softmax(b, dim=-1)
        value, grad_q, grad_p = clamped_chi2(p, q, self.min_prob, need_a, need_b)
        return value, centred(q, grad_q) if need_a else None, centred(p, grad_p) if need_b else None


@register("neyman_chi2")
class NeymanChi2(PointwiseDivergence):
    """Neyman χ² divergence, χ²_N(p‖q) = Σ_k (p_k − q_k)² / p_k (= Pearson χ²(q‖p)).

    Direction: teacher p in the denominator, mode-seeking: it blows up where p ≈ 0 while q > 0.
    Range [0, ∞) mathematically; with the clamp at most about 1/min_prob. Shapes: (N, C) -> (N,).
    Stability: denominator max(p_k, min_prob) (``min_prob``, default 1e-6), exact when nothing is clamped,
    always non-negative. Heavy-tailed: gradient clipping is advisable.
    """

    symmetric = False
    mode = "mode-seeking"
    bounded = False
    param_specs: ClassVar[dict[str, Param]] = {"min_prob": _min_prob_param()}
    min_prob: float

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        p, q = log_p.exp(), log_q.exp()
        return ((p - q).square() / p.clamp_min(self.min_prob)).sum(-1)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        See :func:`clamped_chi2`, with p in the denominator (Pearson χ² with the roles swapped)."""
        q, p = torch.softmax(a, dim=-1), torch.softmax(b, dim=-1)
        value, grad_p, grad_q = clamped_chi2(q, p, self.min_prob, need_b, need_a)
        return value, centred(q, grad_q) if need_a else None, centred(p, grad_p) if need_b else None


def clamped_chi2(
    x: Tensor, y: Tensor, min_prob: float, need_y: bool, need_x: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(Σ (x − y)² / max(y, ε), ∂/∂y, ∂/∂x)`` per row, the derivatives with respect to the probabilities.

    With t = (x − y) / max(y, ε): value = Σ t (x − y) (never a square of two tiny numbers: no float32
    subnormals); ∂/∂x = 2t; ∂/∂y = 1 − (x / y)² where y ≥ ε, and −2t where y < ε (clamped: no gradient
    through the denominator, as ``clamp_min``)."""
    denominator = y.clamp_min(min_prob)
    difference = x - y
    t = difference / denominator
    value = row_dot(t, difference)
    grad_y = None
    if need_y:  # the two cases blended by an exact 0/1 indicator (torch.where is several times slower)
        unclamped = (y >= min_prob).to(y.dtype)
        grad_y = (1.0 - (x / denominator).square()).mul_(unclamped).add_(t * -2.0 * (1.0 - unclamped))
    grad_x = 2.0 * t if need_x else None
    return value, grad_y, grad_x
