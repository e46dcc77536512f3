"""Members that also need the labels: the Plackett-Luce ranking loss ``pld`` and decoupled KD ``dkd``.

Both are called as ``d(student_logits, teacher_logits, mask=None, labels=y)`` with ``y`` an int64 tensor of
shape (N,) holding class indices; they return per-row values like every member. Masked rows give 0.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from divergence_lab.divergences.base import (
    Divergence,
    Param,
    boolean,
    number_in,
    one_of,
    positive_number,
    register,
    zero_masked_rows,
)


def check_labels(labels: Any, logits: Tensor) -> Tensor:
    """Integer class indices of shape (N,) within ``[0, C)``, on the logits' device."""
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32):
        what = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor of shape (N,), got {what}")
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {logits.shape[1]}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.to(device=logits.device, dtype=torch.int64)


PLD_WEIGHTS = ("teacher_softmax", "uniform", "plistmle", "onehot")


@register("pld")
class PlackettLuce(Divergence):
    """PLD (Bassam et al. 2025): teacher-weighted Plackett-Luce likelihood of the teacher-optimal ranking.

    The ranking π* puts the true label first and the other classes by descending teacher logit. With
    student logits s (**not** divided by T) and weights α_k:

        L(s) = Σ_{k=1..C} α_k · [ log Σ_{l ≥ k} exp(s_{π*_l}) − s_{π*_k} ]

    ``weights``: ``teacher_softmax`` (default, α_k = softmax(t / T)_{π*_k}; the paper's τ_T is the
    ``temperature`` parameter and applies to the teacher only), ``uniform`` (α_k = 1/C: ListMLE),
    ``plistmle`` (α_k ∝ 1/log2(k + 1), a fixed decreasing position weight), ``onehot`` (α = e_1: exactly
    cross-entropy). Not a divergence between p and q: it replaces CE and KD together. Convex and
    translation-invariant in s; range [0, ∞). ``t_squared`` defaults to False here (the paper applies no
    T² factor). Stability: suffix log-sum-exps by ``logcumsumexp`` over the reversed ranking, O(C log C).
    Extra input: ``labels`` (N,).
    """

    kind: ClassVar[str] = "ranking"
    requires: ClassVar[tuple[str, ...]] = ("labels",)
    symmetric = False
    mode = "neither"
    bounded = False
    param_specs: ClassVar[dict[str, Param]] = {
        "weights": Param("teacher_softmax", one_of(*PLD_WEIGHTS), "position weights α"),
        "t_squared": Param(False, boolean(), "multiply by T² (off: the paper uses none)"),
    }
    weights: str

    def ranking(self, teacher: Tensor, labels: Tensor) -> Tensor:
        """π* per row: the label first, then the other classes by descending teacher logit."""
        keyed = teacher.scatter(1, labels[:, None], math.inf)
        return keyed.argsort(dim=1, descending=True, stable=True)

    def position_weights(self, teacher: Tensor, order: Tensor) -> Tensor:
        n, c = teacher.shape
        if self.weights == "teacher_softmax":
            return torch.softmax(teacher / self.temperature, dim=1).gather(1, order)
        if self.weights == "uniform":
            return torch.full((n, c), 1.0 / c, dtype=teacher.dtype, device=teacher.device)
        if self.weights == "plistmle":
            positions = torch.arange(1, c + 1, dtype=teacher.dtype, device=teacher.device)
            discount = 1.0 / torch.log2(positions + 1.0)
            return (discount / discount.sum()).expand(n, c)
        onehot = torch.zeros((n, c), dtype=teacher.dtype, device=teacher.device)
        onehot[:, 0] = 1.0
        return onehot

    def _compute(self, student: Tensor, teacher: Tensor, mask: Tensor | None, labels: Tensor) -> Tensor:
        labels = check_labels(labels, student)
        student, teacher = zero_masked_rows(mask, student, teacher)
        order = self.ranking(teacher, labels)
        ranked = student.gather(1, order)
        suffix_lse = torch.logcumsumexp(ranked.flip(1), dim=1).flip(1)
        alpha = self.position_weights(teacher, order)
        return (alpha * (suffix_lse - ranked)).sum(1)


@register("dkd")
class DecoupledKD(Divergence):
    """DKD (Zhao et al. 2022): target-class KD and non-target-class KD, weighted separately.

    With p = softmax(t/T), q = softmax(s/T), label y, binary vectors b = (p_y, 1 − p_y), c = (q_y, 1 − q_y)
    and the non-target distributions p̂_k = p_k / (1 − p_y), q̂_k = q_k / (1 − q_y) for k ≠ y:

        DKD = alpha · KL(b ‖ c) + beta · KL(p̂ ‖ q̂)       (times T² when ``t_squared``)

    Defaults alpha = 1, beta = 8 (the paper's CIFAR setting; use T = 4 there). alpha = beta = 1 is not KL(p‖q)
    exactly: KL(p‖q) = KL(b‖c) + (1 − p_y)·KL(p̂‖q̂). Mode: mass-covering (both parts are forward KLs).
    Stability: log(1 − p_y) = logsumexp of the non-target log-probabilities, so no log of a difference;
    the target class is excluded with a mask, never with −inf logits. Extra input: ``labels`` (N,).
    """

    kind: ClassVar[str] = "labelled"
    requires: ClassVar[tuple[str, ...]] = ("labels",)
    symmetric = False
    mode = "mass-covering"
    bounded = False
    param_specs: ClassVar[dict[str, Param]] = {
        "temperature": Param(4.0, positive_number(), "softmax temperature of both sides (the paper: 4)"),
        "alpha": Param(1.0, number_in(0.0), "weight of the target-class term (TCKD)"),
        "beta": Param(8.0, number_in(0.0), "weight of the non-target-class term (NCKD)"),
    }
    alpha: float
    beta: float

    def _compute(self, student: Tensor, teacher: Tensor, mask: Tensor | None, labels: Tensor) -> Tensor:
        labels = check_labels(labels, student)
        student, teacher = zero_masked_rows(mask, student, teacher)
        log_p = torch.log_softmax(teacher / self.temperature, dim=1)
        log_q = torch.log_softmax(student / self.temperature, dim=1)
        target = torch.zeros_like(log_p, dtype=torch.bool).scatter(1, labels[:, None], True)
        floor = torch.finfo(log_p.dtype).min / 4  # excludes the target from the logsumexps, stays finite
        log_p_rest = torch.where(target, floor, log_p).logsumexp(1)  # log(1 − p_y)
        log_q_rest = torch.where(target, floor, log_q).logsumexp(1)
        log_p_y, log_q_y = log_p.gather(1, labels[:, None])[:, 0], log_q.gather(1, labels[:, None])[:, 0]
        tckd = log_p_y.exp() * (log_p_y - log_q_y) + log_p_rest.exp() * (log_p_rest - log_q_rest)
        # the target entry of log p̂ would be log p_y − log(1 − p_y), up to +1e4: keep it out of every exp
        log_p_hat = torch.where(target, floor, log_p - log_p_rest[:, None])
        log_q_hat = torch.where(target, floor, log_q - log_q_rest[:, None])
        nckd = (log_p_hat.exp() * (log_p_hat - log_q_hat)).sum(1)
        return self.alpha * tckd + self.beta * nckd
