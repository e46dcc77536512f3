"""The batched Sinkhorn solver: matrix-product vs logsumexp updates, tolerance, envelope gradients."""

from __future__ import annotations

import pytest
import torch

from divergence_lab import divergences
from divergence_lab.divergences import transport


def _problem(rows: int = 6, classes: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    log_a = torch.log_softmax(2 * torch.randn(rows, classes, generator=gen, dtype=torch.float64), -1)
    log_b = torch.log_softmax(2 * torch.randn(rows, classes, generator=gen, dtype=torch.float64), -1)
    idx = torch.arange(classes, dtype=torch.float64)
    cost = (idx[:, None] - idx[None, :]).abs() / (classes - 1)
    return log_a, log_b, cost


def test_matrix_product_and_logsumexp_updates_agree(monkeypatch):
    log_a, log_b, cost = _problem()
    fast = transport.sinkhorn_potentials(log_a, log_b, cost, 0.05, 30)
    monkeypatch.setitem(transport.MATMUL_MAX_COST_OVER_EPSILON, torch.float64, 0.0)  # force logsumexp
    slow = transport.sinkhorn_potentials(log_a, log_b, cost, 0.05, 30)
    for x, y in zip(fast, slow, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-10)


def test_small_epsilon_falls_back_to_logsumexp_and_stays_finite():
    log_a, log_b, cost = _problem()
    value = transport.sinkhorn_log(log_a.float(), log_b.float(), cost.float(), 0.005, 50)  # max M / ε = 200
    assert torch.isfinite(value).all()


def test_tolerance_stops_with_the_row_marginal_within_tol():
    log_a, log_b, cost = _problem()
    plan = transport.entropic_log_plan(log_a, log_b, cost, 0.1, 10_000, tol=1e-9).exp()
    torch.testing.assert_close(plan.sum(-1), log_a.exp(), rtol=0, atol=1e-9)
    torch.testing.assert_close(plan.sum(-2), log_b.exp(), rtol=0, atol=1e-12)


def _regularised_ot(student: torch.Tensor, teacher: torch.Tensor, cost: torch.Tensor, epsilon: float):
    """OT_ε = ⟨f, a⟩ + ⟨g, b⟩ at convergence (a = softmax(teacher), b = softmax(student))."""
    log_a, log_b = torch.log_softmax(teacher, -1), torch.log_softmax(student, -1)
    u, v = transport.sinkhorn_potentials(log_a, log_b, cost, epsilon, 3000)
    return (log_a.exp() * epsilon * u).sum(-1) + (log_b.exp() * epsilon * v).sum(-1)


def test_envelope_gradient_is_the_gradient_of_the_regularised_cost():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    d = divergences.build("sinkhorn", cost="abs_diff", epsilon=0.2, iters=3000, gradient="envelope")
    (grad,) = torch.autograd.grad(d(student, teacher).sum(), student)
    cost = d.cost_matrix(5, torch.float64, student.device)
    numeric = torch.zeros_like(student)
    step = 1e-6
    for i in range(3):
        for j in range(5):
            shift = torch.zeros_like(student)
            shift[i, j] = step
            up = _regularised_ot(student.detach() + shift, teacher, cost, 0.2).sum()
            down = _regularised_ot(student.detach() - shift, teacher, cost, 0.2).sum()
            numeric[i, j] = (up - down) / (2 * step)
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)


def test_envelope_value_equals_the_unrolled_value():
    log_a, log_b, _ = _problem()
    unrolled = divergences.build("sinkhorn", iters=40)(log_b, log_a)
    envelope = divergences.build("sinkhorn", iters=40, gradient="envelope")(log_b, log_a)
    torch.testing.assert_close(unrolled, envelope)


def test_batch_envelope_holds_the_plan_fixed():
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    d = divergences.build("sinkhorn_batch", gradient="envelope")
    (grad,) = torch.autograd.grad(d(student, teacher).sum(), student)
    with torch.no_grad():
        plan = d.plan(d.cost_matrix(student, teacher))
    (expected,) = torch.autograd.grad(6 * (plan * d.cost_matrix(student, teacher)).sum(), student)
    torch.testing.assert_close(grad, expected)
    unrolled = divergences.build("sinkhorn_batch")(student, teacher)
    torch.testing.assert_close(d(student, teacher), unrolled)


@pytest.mark.parametrize("name", ["sinkhorn", "sinkhorn_batch"])
def test_bad_gradient_mode_is_refused(name):
    with pytest.raises(ValueError, match="gradient must be one of unroll, envelope"):
        divergences.build(name, gradient="implicit")


@pytest.mark.parametrize("iters", [1, 7, 200])
def test_the_transport_cost_as_a_bilinear_form_equals_the_plan_sum(iters):
    """⟨Π, M⟩ from the potentials without the (B, C, C) plan: value and unrolled gradient in float64, also
    after few iterations (a plan that is far from the marginals) and with a one-hot row (floored log a)."""
    log_a, log_b, cost = _problem(rows=5, classes=30, seed=3)
    log_a[0] = torch.log_softmax(
        torch.full((30,), -1e9, dtype=torch.float64).index_fill(0, torch.tensor(4), 0), -1
    )
    results = []
    for bilinear in (True, False):
        a = log_a.clone().requires_grad_(True)
        b = log_b.clone().requires_grad_(True)
        u, v = transport.sinkhorn_potentials(a, b, cost, 0.05, iters)
        if bilinear:
            value = transport.transport_cost(a, b, u, v, cost, 0.05)
        else:
            value = (transport.log_plan_from_potentials(a, b, u, v, cost, 0.05).exp() * cost).sum(
                dim=(-2, -1)
            )
        weights = torch.linspace(0.5, 1.5, len(value), dtype=value.dtype)
        results.append((value.detach(), *torch.autograd.grad((value * weights).sum(), (a, b))))
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
