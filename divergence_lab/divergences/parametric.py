"""Parametric divergence families and Cauchy-Schwarz: ``alpha`` (Amari), ``fdiv`` (generic f) and ``cs``.

Same conventions as :mod:`divergence_lab.divergences.named`: p = softmax(teacher/T) is the target,
q = softmax(student/T) the trained distribution, (N, C) logits -> (N,) values, all computed in log space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from divergence_lab.divergences.base import Param, PointwiseDivergence, number_in, register
from divergence_lab.divergences.fused import softmax_and_log
from divergence_lab.divergences.named import LOG2, ForwardKL, ReverseKL, kl_from_logs

#: Below this |1 − α²| the Amari divergence switches to its exact KL limit.
ALPHA_LIMIT_TOL = 1e-4
#: For |α| > 1 the inner sum Σ p^a q^b is unbounded; its log is clamped at this value (exp(50) ≈ 5e21).
ALPHA_LOG_SUM_MAX = 50.0
#: ``fdiv`` clamps the log-ratio log(p/q) to ±this bound before applying the generator.
FDIV_LOG_RATIO_BOUND = 40.0


@register("alpha")
class AmariAlpha(PointwiseDivergence):
    """Amari α-divergence, D_α(p‖q) = 4/(1−α²) · (1 − Σ_k p_k^((1−α)/2) q_k^((1+α)/2)), α real (default 0).

    Parametrisation: Amari's. Limits: α → −1 gives KL(p‖q) (forward), α → +1 gives KL(q‖p) (reverse),
    α = 0 gives 4·H² (four times ``hellinger``). When |1 − α²| < 1e-4 the exact limit (``kl`` or ``rkl``)
    is used instead of the formula (relative error of that switch is O(|1 ± α|) ≤ ~1e-4).
    Mode (instance-level, following Minka 2005 mapped to Amari's α): α ≤ −1 "mass-covering", α ≥ 1
    "mode-seeking", otherwise "neither" (a continuum between the two). Range [0, 4/(1−α²)] for |α| < 1
    (``bounded`` is True then), [0, ∞) otherwise. Shapes: (N, C) -> (N,).
    Stability: the sum is exp(logsumexp(a·log p + b·log q)) with a = (1−α)/2, b = (1+α)/2, and the value
    uses −expm1 (accurate near p = q). For |α| > 1 one exponent is negative and the sum can be
    astronomically large for disjoint supports; its log is then clamped at 50 (value saturates, zero
    gradient beyond), which keeps float32 finite.
    """

    symmetric = False
    mode = "neither"
    bounded = False
    param_specs: ClassVar[dict[str, Param]] = {"alpha": Param(0.0, number_in(), "Amari α (real)")}
    alpha: float

    def _setup(self) -> None:
        a = self.alpha
        self.symmetric = a == 0.0
        self.bounded = abs(a) < 1.0
        self.mode = "mass-covering" if a <= -1.0 else "mode-seeking" if a >= 1.0 else "neither"

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        a = self.alpha
        if abs(1.0 - a * a) < ALPHA_LIMIT_TOL:
            return kl_from_logs(log_p, log_q) if a < 0 else kl_from_logs(log_q, log_p)
        log_sum = torch.logsumexp(0.5 * (1.0 - a) * log_p + 0.5 * (1.0 + a) * log_q, dim=-1)
        if abs(a) > 1.0:
            log_sum = log_sum.clamp_max(ALPHA_LOG_SUM_MAX)
        return (4.0 / (1.0 - a * a) * -torch.expm1(log_sum)).clamp_min(0.0)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With c = 4/(1−α²), exponents u = (1−α)/2 on p and v = (1+α)/2 on q, S = Σ p^u q^v and the
        weights w = p^u q^v / S (a softmax of u log p + v log q): value = −c·expm1(log S), and through
        log_softmax (the weights sum to one) ∂/∂a = −c S v (w − q), ∂/∂b = −c S u (w − p). Zero where the
        clamps act: log S above its bound (|α| > 1), or a value rounded below 0."""
        alpha = self.alpha
        if abs(1.0 - alpha * alpha) < ALPHA_LIMIT_TOL:
            limit = ForwardKL if alpha < 0 else ReverseKL
            return limit._fused(self, a, b, need_a, need_b)
        q, log_q = softmax_and_log(a)
        p, log_p = softmax_and_log(b)
        u, v = 0.5 * (1.0 - alpha), 0.5 * (1.0 + alpha)
        exponent = log_p.mul_(u).add_(log_q, alpha=v)
        log_sum = torch.logsumexp(exponent, dim=-1, keepdim=True)
        active = torch.ones_like(log_sum)
        if abs(alpha) > 1.0:
            active = (log_sum <= ALPHA_LOG_SUM_MAX).to(log_sum.dtype)
            log_sum = log_sum.clamp_max(ALPHA_LOG_SUM_MAX)
        scale = 4.0 / (1.0 - alpha * alpha)
        raw = scale * -torch.expm1(log_sum)
        active = active * (raw >= 0.0).to(raw.dtype)
        weights = exponent.sub_(log_sum).exp_()
        factor = -scale * log_sum.exp() * active
        grad_a = (weights - q).mul_(factor * v) if need_a else None
        grad_b = (weights - p).mul_(factor * u) if need_b else None
        return raw.clamp_min(0.0).squeeze(-1), grad_a, grad_b


# Named generators, written as functions of r = log(p/q) so that f(exp(r)) is evaluated without
# overflow or cancellation: each g(r) equals f(t) at t = exp(r).
def _gen_kl(r: Tensor) -> Tensor:  # t log t
    return r.exp() * r


def _gen_rkl(r: Tensor) -> Tensor:  # −log t
    return -r


def _gen_tv(r: Tensor) -> Tensor:  # ½|t − 1|
    return 0.5 * torch.expm1(r).abs()


def _gen_hellinger(r: Tensor) -> Tensor:  # (√t − 1)²
    return torch.expm1(0.5 * r).square()


def _gen_pearson(r: Tensor) -> Tensor:  # (t − 1)²
    return torch.expm1(r).square()


def _gen_neyman(r: Tensor) -> Tensor:  # (1 − t)²/t = (t − 1)(1 − 1/t)
    return -torch.expm1(r) * torch.expm1(-r)


def _gen_js(r: Tensor) -> Tensor:  # ½[t log t − (1+t) log((1+t)/2)]
    return 0.5 * (r.exp() * (LOG2 - F.softplus(-r)) + LOG2 - F.softplus(r))


# name -> (generator of r, symmetric, mode, bounded)
NAMED_GENERATORS: dict[str, tuple[Callable[[Tensor], Tensor], bool, str, bool]] = {
    "kl": (_gen_kl, False, "mass-covering", False),
    "rkl": (_gen_rkl, False, "mode-seeking", False),
    "tv": (_gen_tv, True, "neither", True),
    "hellinger": (_gen_hellinger, True, "neither", True),
    "pearson": (_gen_pearson, False, "mass-covering", False),
    "neyman": (_gen_neyman, False, "mode-seeking", False),
    "js": (_gen_js, True, "neither", True),
}


def _check_generator(name: str, value: Any) -> str | Callable[[Tensor], Tensor]:
    if isinstance(value, str):
        if value not in NAMED_GENERATORS:
            raise ValueError(
                f"{name} must be one of {', '.join(NAMED_GENERATORS)} or a callable f(t) (got {value!r})"
            )
        return value
    if not callable(value):
        raise ValueError(
            f"{name} must be one of {', '.join(NAMED_GENERATORS)} or a callable f(t) (got {value!r})"
        )
    try:
        at_one = float(value(torch.ones(1, dtype=torch.float64)).reshape(-1)[0])
    except Exception as err:  # any failure of a user callable is a configuration error
        raise ValueError(f"{name}: calling the generator on a float64 tensor failed ({err})") from err
    if not math.isfinite(at_one) or abs(at_one) > 1e-6:
        raise ValueError(f"{name} must satisfy f(1) = 0 (got f(1) = {at_one})")
    return value


@register("fdiv")
class FDivergence(PointwiseDivergence):
    """Generic f-divergence, D_f(p‖q) = Σ_k q_k f(p_k / q_k), f convex with f(1) = 0.

    ``generator`` (default ``"kl"``) is a name or a Python callable ``f(t: Tensor) -> Tensor`` (applied
    elementwise; convexity is the caller's responsibility, f(1) = 0 is checked). Named generators and the
    dedicated member they reproduce: ``kl`` t log t (= ``kl``), ``rkl`` −log t (= ``rkl``), ``tv`` ½|t−1|
    (= ``tv``), ``hellinger`` (√t−1)² (= 2 × ``hellinger``), ``pearson`` (t−1)² (= ``chi2``), ``neyman``
    (1−t)²/t (= ``neyman_chi2``), ``js`` ½[t log t − (1+t) log((1+t)/2)] (= ``js``).
    Direction: p (teacher) in the numerator of the ratio. ``symmetric``/``mode``/``bounded`` follow the
    generator (a callable gives False/"neither"/False). Range [0, ∞) (bounded for tv, hellinger, js).
    Shapes: (N, C) -> (N,).
    Stability: the log-ratio r = log p − log q is clamped to ±40 before f is applied (t in [4e-18, 2e17]),
    so t and the named generators stay finite in float32 even for one-hot rows; entries beyond the bound
    saturate (their gradient through the ratio is 0) and the value then differs from the dedicated member,
    which needs no clamp. Named generators are evaluated as stable functions of r (expm1, softplus).
    No χ² ``min_prob`` clamp is applied here.
    """

    symmetric = False
    mode = "neither"
    bounded = False
    param_specs: ClassVar[dict[str, Param]] = {
        "generator": Param("kl", _check_generator, "f as a name or a callable f(t)"),
    }
    generator: str | Callable[[Tensor], Tensor]

    def _setup(self) -> None:
        if isinstance(self.generator, str):
            self._of_log_ratio, self.symmetric, self.mode, self.bounded = NAMED_GENERATORS[self.generator]
        else:
            user_f = self.generator
            self._of_log_ratio = lambda r: user_f(r.exp())

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        r = (log_p - log_q).clamp(-FDIV_LOG_RATIO_BOUND, FDIV_LOG_RATIO_BOUND)
        return (log_q.exp() * self._of_log_ratio(r)).sum(-1)


@register("cs")
class CauchySchwarz(PointwiseDivergence):
    """Cauchy-Schwarz divergence, D_CS = −log[(Σ p q)² / (Σ p² · Σ q²)] = log Σp² + log Σq² − 2 log Σpq.

    Direction: symmetric, scale-invariant, neither covering nor seeking. Range [0, ∞): 0 iff p = q,
    large (≈ the log-probability gap) for nearly disjoint supports. Shapes: (N, C) -> (N,).
    Stability: fully in log space, each sum is a logsumexp (2 log p, 2 log q, log p + log q), so it stays
    finite for disjoint one-hot rows; rounding below 0 is clamped to 0.
    """

    symmetric = True
    mode = "neither"
    bounded = False

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        value = (
            torch.logsumexp(2.0 * log_p, dim=-1)
            + torch.logsumexp(2.0 * log_q, dim=-1)
            - 2.0 * torch.logsumexp(log_p + log_q, dim=-1)
        )
        return value.clamp_min(0.0)

    def _fused(self, a: Tensor, b: Tensor, need_a: bool, need_b: bool) -> tuple[Tensor, Any, Any]:
        """An optimisation of ``_pointwise``, pinned by test_fused.py::test_fused_matches_plain_autograd.

        With the softmaxes s = softmax(2 log p) = p²/Σp², t = softmax(2 log q) and r = softmax(log p +
        log q) = pq/Σpq, the logsumexp gradients give ∂value/∂log q = 2t − 2r, whose sum is 0, so through
        log_softmax ∂/∂a = 2(t − r), and likewise ∂/∂b = 2(s − r); zero where the value is clamped."""
        log_q = torch.log_softmax(a, dim=-1)
        log_p = torch.log_softmax(b, dim=-1)
        square_p, square_q, cross = 2.0 * log_p, 2.0 * log_q, log_p + log_q
        log_cross = torch.logsumexp(cross, dim=-1, keepdim=True)
        log_square_p = torch.logsumexp(square_p, dim=-1, keepdim=True)
        log_square_q = torch.logsumexp(square_q, dim=-1, keepdim=True)
        raw = log_square_p + log_square_q - 2.0 * log_cross
        factor = 2.0 * (raw >= 0.0).to(raw.dtype)
        r = cross.sub_(log_cross).exp_()
        grad_a = square_q.sub_(log_square_q).exp_().sub_(r).mul_(factor) if need_a else None
        grad_b = square_p.sub_(log_square_p).exp_().sub_(r).mul_(factor) if need_b else None
        return raw.clamp_min(0.0).squeeze(-1), grad_a, grad_b
