"""Entropic optimal transport between class distributions: ``sinkhorn`` and ``sinkhorn_div``.

Both are pointwise members: for every row, p = softmax(teacher/T) and q = softmax(student/T) are coupled
over the C classes with a ground cost M (C×C). The solver is a batched, log-domain Sinkhorn iteration with
a fixed iteration budget (optionally stopping at a tolerance). The updates are stabilised matrix products
with K = exp(−M/ε) where K is representable, logsumexp otherwise. Gradients come from unrolling the
iterations (memory O(iters · N · C); the transport cost is a bilinear form of the potentials, so no N · C²
plan is formed while the kernel is representable) or from the dual potentials (envelope).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from divergence_lab.divergences.base import (
    Param,
    PointwiseDivergence,
    boolean,
    integer_at_least,
    number_in,
    one_of,
    positive_number,
    register,
)

NAMED_COSTS = ("zero_one", "abs_diff")
#: Log-probabilities are floored here before entering the solver (−inf for zero-probability classes,
#: e.g. from −inf logits, would otherwise produce NaN).
LOG_PROB_FLOOR = -1e4


def _check_cost(name: str, value: Any) -> str | Tensor:
    expected = f"{name} must be one of {', '.join(NAMED_COSTS)} or a C x C matrix"
    if isinstance(value, str):
        if value not in NAMED_COSTS:
            raise ValueError(f"{expected} (got {value!r})")
        return value
    try:
        matrix = torch.as_tensor(_to_nested(value), dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{expected} (got {type(value).__name__})") from err
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"{name} matrix must be square C x C, got shape {tuple(matrix.shape)}")
    if not bool(torch.isfinite(matrix).all()) or bool((matrix < 0).any()):
        raise ValueError(f"{name} matrix entries must be finite and >= 0")
    return matrix


def _to_nested(value: Any) -> Any:
    """Plain nested lists from tensors, arrays, tuples or OmegaConf ListConfigs."""
    if isinstance(value, Tensor):
        return value.detach().cpu().to(torch.float64)
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    if hasattr(value, "__iter__") and not isinstance(value, (str, bytes, dict)):
        return [_to_nested(v) for v in value]
    return value


#: Matrix-product updates need every kernel entry exp(−M/ε) to be a normal floating-point number; above
#: this max(M)/ε the solver uses logsumexp updates instead (exp(−80) ≈ 1.8e-35 > float32's 1.2e-38).
MATMUL_MAX_COST_OVER_EPSILON = {torch.float32: 80.0, torch.float64: 700.0}
#: With a tolerance, the marginal error is checked every this many iterations.
TOLERANCE_CHECK_EVERY = 10
GRADIENTS = ("unroll", "envelope")


def _log_kernel_product(log_x: Tensor, kernel: Tensor) -> Tensor:
    """log Σ_j exp(log_x[r, j]) · K[i, j] for every row r and i, as one stabilised matrix product."""
    top = log_x.amax(dim=-1, keepdim=True)
    return top + ((log_x - top).exp() @ kernel.transpose(-1, -2)).log()


def sinkhorn_potentials(
    log_a: Tensor, log_b: Tensor, cost: Tensor, epsilon: float, iters: int, tol: float = 0.0
) -> tuple[Tensor, Tensor]:
    """Scaled dual potentials (u, v) of the entropic OT between the rows of a and b, batched over rows.

    ``log_a``, ``log_b``: (B, C) log-marginals; ``cost``: (C, C) ground cost M shared by all rows. The plan
    is Π_ij = a_i b_j exp(u_i + v_j − M_ij/ε); f = ε u and g = ε v are the usual dual potentials.
    Update order (fixed): u ← −log Σ_j b_j e^{v_j} K_ij (rows), then v ← −log Σ_i a_i e^{u_i} K_ij
    (columns), with K = exp(−M/ε); after every full iteration the column marginal is exact. The sums are
    stabilised matrix products when max(M)/ε keeps K representable, logsumexp otherwise. ``iters`` is
    the iteration budget; with ``tol > 0`` the loop stops early once the row marginal's largest absolute
    error is below ``tol`` (checked every 10 iterations).
    """
    log_a = log_a.clamp_min(LOG_PROB_FLOOR)
    log_b = log_b.clamp_min(LOG_PROB_FLOOR)
    if uses_matrix_products(cost, epsilon):
        kernel = torch.exp(-cost / epsilon)

        def rows(log_x: Tensor) -> Tensor:
            return _log_kernel_product(log_x, kernel)

        def columns(log_x: Tensor) -> Tensor:
            return _log_kernel_product(log_x, kernel.transpose(-1, -2))
    else:
        log_kernel = -cost / epsilon

        def rows(log_x: Tensor) -> Tensor:
            return torch.logsumexp(log_x[..., None, :] + log_kernel, dim=-1)

        def columns(log_x: Tensor) -> Tensor:
            return torch.logsumexp(log_x[..., :, None] + log_kernel, dim=-2)

    u = torch.zeros_like(log_a)
    v = torch.zeros_like(log_b)
    for step in range(1, iters + 1):
        u = -rows(log_b + v)
        v = -columns(log_a + u)
        if tol > 0 and step % TOLERANCE_CHECK_EVERY == 0:
            row_marginal = (log_a + u + rows(log_b + v)).exp()
            if float((row_marginal - log_a.exp()).abs().max()) < tol:
                break
    return u, v


def log_plan_from_potentials(
    log_a: Tensor, log_b: Tensor, u: Tensor, v: Tensor, cost: Tensor, epsilon: float
) -> Tensor:
    """log Π_ij = log a_i + u_i + log b_j + v_j − M_ij/ε, shape (B, C, C)."""
    log_a = log_a.clamp_min(LOG_PROB_FLOOR)
    log_b = log_b.clamp_min(LOG_PROB_FLOOR)
    return (log_a + u)[..., :, None] + (log_b + v)[..., None, :] - cost / epsilon


def entropic_log_plan(
    log_a: Tensor, log_b: Tensor, cost: Tensor, epsilon: float, iters: int, tol: float = 0.0
) -> Tensor:
    """log Π of the entropic plans between rows of a and b, batched over rows: shape (B, C, C)."""
    u, v = sinkhorn_potentials(log_a, log_b, cost, epsilon, iters, tol)
    return log_plan_from_potentials(log_a, log_b, u, v, cost, epsilon)


def uses_matrix_products(cost: Tensor, epsilon: float) -> bool:
    """Whether every kernel entry exp(−M/ε) is a normal number of the cost's dtype (see the limits above)."""
    return float(cost.detach().max()) / epsilon <= MATMUL_MAX_COST_OVER_EPSILON.get(cost.dtype, 80.0)


def transport_cost(
    log_a: Tensor, log_b: Tensor, u: Tensor, v: Tensor, cost: Tensor, epsilon: float
) -> Tensor:
    """⟨Π, M⟩ per row for the plan Π_ij = x_i K_ij y_j with x = a e^u, y = b e^v and K = exp(−M/ε).

    Where the kernel is representable this is the bilinear form xᵀ (K ⊙ M) y: a (B, C) × (C, C) product,
    no (B, C, C) plan. It is evaluated as exp(s_x + s_y) · x̃ᵀ (K ⊙ M) ỹ with x̃ = x e^{−s_x}, ỹ = y e^{−s_y}
    and s the row maxima of log x and log y (detached: the value does not depend on them), so x̃, ỹ ≤ 1;
    every plan entry is at most 1, so s_x + s_y ≤ max(M)/ε and exp(s_x + s_y) is finite wherever the kernel
    is representable. Otherwise the plan is formed in log space.
    """
    if not uses_matrix_products(cost, epsilon):
        return (log_plan_from_potentials(log_a, log_b, u, v, cost, epsilon).exp() * cost).sum(dim=(-2, -1))
    log_x = log_a.clamp_min(LOG_PROB_FLOOR) + u
    log_y = log_b.clamp_min(LOG_PROB_FLOOR) + v
    shift_x = log_x.detach().amax(dim=-1, keepdim=True)
    shift_y = log_y.detach().amax(dim=-1, keepdim=True)
    weighted_kernel = torch.exp(-cost / epsilon) * cost
    inner = (((log_x - shift_x).exp() @ weighted_kernel) * (log_y - shift_y).exp()).sum(-1)
    return inner * (shift_x + shift_y).squeeze(-1).exp()


def sinkhorn_log(
    log_a: Tensor,
    log_b: Tensor,
    cost: Tensor,
    epsilon: float,
    iters: int,
    tol: float = 0.0,
    gradient: str = "unroll",
) -> Tensor:
    """Transport cost ⟨Π, M⟩ of the entropic plans, one value per row.

    ``gradient="unroll"`` differentiates through every iteration. ``"envelope"`` solves without a graph
    and passes the dual potentials as the gradient w.r.t. the marginals (∂OT_ε/∂a = f = ε u,
    ∂OT_ε/∂b = g = ε v: the envelope theorem for the regularised cost, which the transport cost
    approaches as ε → 0); memory then no longer grows with ``iters``.
    """
    if gradient == "unroll":
        u, v = sinkhorn_potentials(log_a, log_b, cost, epsilon, iters, tol)
        return transport_cost(log_a, log_b, u, v, cost, epsilon)
    with torch.no_grad():
        u, v = sinkhorn_potentials(log_a, log_b, cost, epsilon, iters, tol)
        value = transport_cost(log_a, log_b, u, v, cost, epsilon)
    surrogate = (log_a.exp() * (epsilon * u)).sum(-1) + (log_b.exp() * (epsilon * v)).sum(-1)
    return value + surrogate - surrogate.detach()


class _SinkhornBase(PointwiseDivergence):
    symmetric = True
    mode = "neither"
    bounded = True
    param_specs: ClassVar[dict[str, Param]] = {
        "cost": Param("zero_one", _check_cost, "ground cost: zero_one, abs_diff, or a C x C matrix"),
        "epsilon": Param(0.1, positive_number(), "entropic regularisation (in units of the cost)"),
        "iters": Param(50, integer_at_least(1), "number of Sinkhorn iterations"),
        "normalize_cost": Param(True, boolean(), "divide the cost matrix by its max"),
        "tol": Param(0.0, number_in(0.0), "stop early once the row-marginal error is below tol (0: never)"),
        "gradient": Param(
            "unroll", one_of(*GRADIENTS), "unroll the iterations, or envelope (dual potentials)"
        ),
    }
    cost: str | Tensor
    epsilon: float
    iters: int
    normalize_cost: bool
    tol: float
    gradient: str

    def _setup(self) -> None:
        if isinstance(self.cost, Tensor):
            self.symmetric = bool(torch.equal(self.cost, self.cost.T))

    def cost_matrix(self, num_classes: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The (normalised) C×C ground cost for ``num_classes`` classes."""
        if isinstance(self.cost, Tensor):
            if self.cost.shape != (num_classes, num_classes):
                c = num_classes
                raise ValueError(
                    f"cost matrix has shape {tuple(self.cost.shape)} but the logits have {c} classes "
                    f"(need {c} x {c})"
                )
            matrix = self.cost.to(device=device, dtype=dtype)
        else:
            idx = torch.arange(num_classes, device=device, dtype=dtype)
            if self.cost == "zero_one":
                matrix = (idx[:, None] != idx[None, :]).to(dtype)
            else:  # abs_diff
                matrix = (idx[:, None] - idx[None, :]).abs()
        if self.normalize_cost:
            top = matrix.max()
            matrix = torch.where(top > 0, matrix / torch.where(top > 0, top, torch.ones_like(top)), matrix)
        return matrix


@register("sinkhorn")
class Sinkhorn(_SinkhornBase):
    """Sinkhorn distance (Cuturi 2013): transport cost ⟨Π_ε, M⟩ of the entropic OT plan between p and q.

    Π_ε ≈ argmin over couplings Π (Π 1 = p, Πᵀ 1 = q) of ⟨Π, M⟩ − ε H(Π), from ``iters`` log-domain
    Sinkhorn steps (not run to a tolerance). Parameters: ``cost`` "zero_one" (M = 1 − I, the OT analogue of
    TV), "abs_diff" (M_ij = |i − j|, for ordinal labels) or an explicit C×C matrix (nested list or tensor,
    non-negative; checked against C at call time); ``epsilon`` > 0 (default 0.1, in units of the normalised
    cost); ``iters`` ≥ 1 (default 50); ``normalize_cost`` (default True) divides M by its max so ε has a
    consistent meaning.
    Direction: rows of Π follow the teacher p, columns the student q; symmetric for symmetric M (the named
    costs are; an explicit matrix sets ``symmetric`` from its own symmetry). Mode "neither": geometry-aware
    and informative even for disjoint supports. Range [0, max M]; note it is NOT 0 at p = q (the entropic
    plan blurs mass off the diagonal) — use ``sinkhorn_div`` for a divergence that vanishes at p = q.
    Shapes: (N, C) -> (N,), memory O(iters·N·C) (O(iters·N·C²) in the logsumexp regime).
    Stability: log-domain updates with log-probabilities floored at −1e4, so nothing is −inf; the
    matrix-product form is used only while exp(−max M/ε) is a normal number (max M/ε ≤ 80 in float32,
    700 in float64), logsumexp beyond. With few iterations the row marginal of Π is only approximately p
    (``tol`` > 0 stops once it is within tol). ``gradient``: ``unroll`` (autograd through the iterations,
    default) or ``envelope`` (the dual potentials; no graph through the loop).
    """

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        cost = self.cost_matrix(log_p.shape[-1], log_p.dtype, log_p.device)
        return sinkhorn_log(log_p, log_q, cost, self.epsilon, self.iters, self.tol, self.gradient)


@register("sinkhorn_div")
class SinkhornDivergence(_SinkhornBase):
    """Debiased Sinkhorn divergence, S(p, q) = OT(p, q) − ½ OT(p, p) − ½ OT(q, q).

    OT is the transport cost ⟨Π_ε, M⟩ computed exactly as in ``sinkhorn`` (same parameters and solver;
    the three problems are solved in one batched call of 3N rows). Removing the self-transport terms
    makes the value 0 at p = q (exactly, since identical problems give identical results). It interpolates
    between OT (ε → 0) and an MMD-like quadratic form (ε → ∞). Symmetric for symmetric M; mode "neither";
    range [0, max M] in practice (non-negativity is a theorem for the regularised objective with a
    positive-definite kernel exp(−M/ε), such as the named costs; for the transport-cost form it is
    verified numerically in the tests, and tiny negative values from an unconverged solver are possible).
    Shapes: (N, C) -> (N,), memory O(3·iters·N·C) (C² per row in the logsumexp regime). Stability: as
    ``sinkhorn``.
    """

    def _pointwise(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        n = log_p.shape[0]
        cost = self.cost_matrix(log_p.shape[-1], log_p.dtype, log_p.device)
        log_a = torch.cat([log_p, log_p, log_q])
        log_b = torch.cat([log_q, log_p, log_q])
        ot = sinkhorn_log(log_a, log_b, cost, self.epsilon, self.iters, self.tol, self.gradient)
        return ot[:n] - 0.5 * ot[n : 2 * n] - 0.5 * ot[2 * n :]
