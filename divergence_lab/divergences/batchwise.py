"""Members whose row values depend on the whole batch: SinKD's batch-wise OT and DIST's correlations.

Called like every member, ``d(student_logits, teacher_logits, mask=None) -> (N,)``; the batch is the set
of rows that the mask keeps (all rows without a mask). Masked rows get 0 and take no part in the batch
computation. Because the values couple the rows, compare them only within a batch, and expect the loss
to change with the batch size.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from divergence_lab.divergences.base import (
    Divergence,
    Param,
    boolean,
    integer_at_least,
    number_in,
    one_of,
    positive_number,
    register,
)
from divergence_lab.divergences.transport import GRADIENTS, entropic_log_plan


class BatchDivergence(Divergence):
    """Base of ``kind="batch"`` members: implement ``_batch(student, teacher) -> (n,)`` on the kept rows."""

    kind: ClassVar[str] = "batch"

    def _compute(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        if mask is None:
            return self._batch(student, teacher)
        values = torch.zeros(student.shape[0], dtype=student.dtype, device=student.device)
        if mask.any():
            values = values.masked_scatter(mask, self._batch(student[mask], teacher[mask]))
        return values

    def _batch(self, student: Tensor, teacher: Tensor) -> Tensor:
        raise NotImplementedError


@register("sinkhorn_batch")
class SinkhornBatch(BatchDivergence):
    """SinKD's batch-wise Sinkhorn distance (Cui et al. 2024) between the student's and teacher's outputs.

    Each row is a point: P_s[i] = softmax(s_i / T), P_t[j] = softmax(t_j / T). The ground cost between
    points is W_ij = ‖P_s[i] − P_t[j]‖₁ (B × B, values in [0, 2]); Π is the entropic OT plan with uniform
    marginals 1/B (regularisation ``epsilon``, ``iters`` iterations, rows normalised first). The row value is
    v_i = B · Σ_j Π_ij W_ij, so ``values.mean()`` = ⟨Π, W⟩, the OT cost between the two empirical
    distributions, and ``values.sum()`` equals the official code's loss (whose plan has mass B).
    ``solver``: ``log`` (default; log-domain updates, stable for any ε) or ``multiplicative`` (the paper's
    code: K = exp(−W/ε), alternately divided by its row and column sums; underflows for small ε).
    ``gradient``: ``unroll`` (default, as the paper: through the cost and the unrolled iterations) or
    ``envelope`` (Π held fixed, gradient through the cost only: ∂OT_ε/∂W = Π*).
    Defaults follow the code: T = 2, ε = 0.1, 20 iterations, no T² factor. Symmetric under swapping the
    two sides; mode "neither"; range [0, 2]. Stability: the cost is built from probabilities (bounded); the
    log solver never forms exp(−W/ε) itself. Memory O(iters · B²).
    """

    symmetric = True
    mode = "neither"
    bounded = True
    param_specs: ClassVar[dict[str, Param]] = {
        "temperature": Param(2.0, positive_number(), "softmax temperature of both sides (the paper: 2)"),
        "t_squared": Param(False, boolean(), "multiply by T² (off: the paper uses none)"),
        "epsilon": Param(0.1, positive_number(), "entropic regularisation"),
        "iters": Param(20, integer_at_least(1), "Sinkhorn iterations"),
        "solver": Param("log", one_of("log", "multiplicative"), "log-domain or the paper's scaling"),
        "gradient": Param(
            "unroll", one_of(*GRADIENTS), "through the iterations, or envelope (plan held fixed)"
        ),
    }
    epsilon: float
    iters: int
    solver: str
    gradient: str

    def cost_matrix(self, student: Tensor, teacher: Tensor) -> Tensor:
        """W_ij = ‖softmax(s_i/T) − softmax(t_j/T)‖₁, shape (B, B)."""
        p_student = torch.softmax(student / self.temperature, dim=1)
        p_teacher = torch.softmax(teacher / self.temperature, dim=1)
        return (p_student[:, None, :] - p_teacher[None, :, :]).abs().sum(-1)

    def plan(self, cost: Tensor) -> Tensor:
        """The (B, B) entropic plan with marginals 1/B after ``iters`` iterations."""
        size = cost.shape[0]
        if self.solver == "multiplicative":
            kernel = torch.exp(-cost / self.epsilon)
            for _ in range(self.iters):
                kernel = kernel / kernel.sum(1, keepdim=True)
                kernel = kernel / kernel.sum(0, keepdim=True)
            return kernel / size
        log_marginal = torch.full((1, size), -math.log(size), dtype=cost.dtype, device=cost.device)
        return entropic_log_plan(log_marginal, log_marginal, cost, self.epsilon, self.iters)[0].exp()

    def _batch(self, student: Tensor, teacher: Tensor) -> Tensor:
        cost = self.cost_matrix(student, teacher)
        if self.gradient == "envelope":  # ∂OT_ε/∂W = Π*: the plan is a constant for the gradient
            with torch.no_grad():
                plan = self.plan(cost.detach())
        else:
            plan = self.plan(cost)
        return student.shape[0] * (plan * cost).sum(1)


def _pearson(a: Tensor, b: Tensor, dim: int, eps: float = 1e-8) -> Tensor:
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


@register("dist")
class DIST(BatchDivergence):
    """DIST (Huang et al. 2022): match the teacher's relations, not its probabilities.

    With Q = softmax(s/T), P = softmax(t/T) (B × C) and ρ the Pearson correlation:
    inter-class relation of row i: 1 − ρ(Q_i·, P_i·) (over classes); intra-class relation of the batch:
    1 − mean_j ρ(Q_·j, P_·j) (over the batch, per class). Row value
    v_i = beta · (1 − ρ(Q_i·, P_i·)) + gamma · intra, so ``values.mean()`` is the paper's
    beta·L_inter + gamma·L_intra (times T² when ``t_squared``, as the paper does). Defaults T = 4,
    beta = gamma = 2 (the paper's CIFAR setting; ImageNet: T = 1, beta = gamma = 1). Symmetric;
    range [0, 2·(β+γ)]. Stability: probabilities, not logs, enter the correlations (bounded inputs);
    ρ has ε = 1e-8 in its denominator, so a constant vector (e.g. a batch of one) gives correlation 0.
    """

    symmetric = True
    mode = "neither"
    bounded = True
    param_specs: ClassVar[dict[str, Param]] = {
        "temperature": Param(
            4.0, positive_number(), "softmax temperature of both sides (the paper's CIFAR: 4)"
        ),
        "beta": Param(2.0, number_in(0.0), "weight of the inter-class (per-row) relation"),
        "gamma": Param(2.0, number_in(0.0), "weight of the intra-class (per-class, over the batch) relation"),
    }
    beta: float
    gamma: float

    def _batch(self, student: Tensor, teacher: Tensor) -> Tensor:
        q = torch.softmax(student / self.temperature, dim=1)
        p = torch.softmax(teacher / self.temperature, dim=1)
        inter = 1.0 - _pearson(q, p, dim=1)
        intra = 1.0 - _pearson(q, p, dim=0).mean()
        return self.beta * inter + self.gamma * intra
