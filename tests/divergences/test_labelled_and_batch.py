"""pld, dkd (need labels) and dist, sinkhorn_batch (need the batch) against independent references."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from divergence_lab import divergences


def _inputs(n: int = 6, c: int = 7, seed: int = 0, scale: float = 3.0):
    gen = torch.Generator().manual_seed(seed)
    student = scale * torch.randn(n, c, generator=gen, dtype=torch.float64)
    teacher = scale * torch.randn(n, c, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, c, (n,), generator=gen)
    return student, teacher, labels


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- PLD -------------------------------------------------------------------------------------------


def test_pld_with_onehot_weights_is_cross_entropy():
    student, teacher, labels = _inputs()
    value = divergences.build("pld", weights="onehot")(student, teacher, labels=labels)
    torch.testing.assert_close(value, F.cross_entropy(student, labels, reduction="none"))


def test_pld_ranking_puts_the_label_first_then_teacher_order():
    student, teacher, labels = _inputs()
    order = divergences.build("pld").ranking(teacher, labels)
    for row in range(len(labels)):
        assert order[row, 0] == labels[row]
        rest = [int(k) for k in order[row, 1:]]
        assert rest == sorted(rest, key=lambda k: -float(teacher[row, k]))


def test_pld_matches_a_loop_reference_and_its_closed_form_gradient():
    student, teacher, labels = _inputs()
    d = divergences.build("pld", temperature=2.0)
    s = student.clone().requires_grad_(True)
    value = d(s, teacher, labels=labels)
    (grad,) = torch.autograd.grad(value.sum(), s)
    for row in range(len(labels)):
        pi = [int(labels[row])] + sorted(
            (k for k in range(7) if k != labels[row]), key=lambda k: -teacher[row, k]
        )
        alpha = _softmax(teacher[row].numpy() / 2.0)[pi]
        scores = student[row].numpy()[pi]
        loss = sum(alpha[k] * (np.log(np.exp(scores[k:]).sum()) - scores[k]) for k in range(7))
        assert value[row].item() == pytest.approx(loss, rel=1e-10)
        expected = np.zeros(7)
        for k in range(7):  # ∂/∂s_i: Σ_{k ≤ pos(i)} α_k softmax(s_{π_k..})_i − α_{pos(i)}
            tail = np.exp(scores[k:]) / np.exp(scores[k:]).sum()
            for offset, cls in enumerate(pi[k:]):
                expected[cls] += alpha[k] * tail[offset]
            expected[pi[k]] -= alpha[k]
        np.testing.assert_allclose(grad[row].numpy(), expected, rtol=1e-9, atol=1e-12)


def test_pld_is_invariant_to_a_constant_added_to_student_logits():
    student, teacher, labels = _inputs()
    d = divergences.build("pld")
    torch.testing.assert_close(d(student + 17.5, teacher, labels=labels), d(student, teacher, labels=labels))


def test_pld_uniform_weights_are_listmle_and_plistmle_weights_decrease():
    student, teacher, labels = _inputs()
    uniform = divergences.build("pld", weights="uniform")(student, teacher, labels=labels)
    order = divergences.build("pld").ranking(teacher, labels)
    ranked = student.gather(1, order)
    listmle = sum((torch.logsumexp(ranked[:, k:], 1) - ranked[:, k]) for k in range(7)) / 7
    torch.testing.assert_close(uniform, listmle)
    weights = divergences.build("pld", weights="plistmle").position_weights(teacher, order)
    assert torch.all(weights[:, :-1] >= weights[:, 1:]) and torch.allclose(
        weights.sum(1), torch.ones(6, dtype=weights.dtype)
    )


def test_pld_refuses_bad_labels():
    student, teacher, _ = _inputs()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\)"):
        divergences.build("pld")(student, teacher, labels=torch.full((6,), 7))
    with pytest.raises(ValueError, match="takes extra inputs"):
        divergences.build("pld")(student, teacher)


# ---- DKD -------------------------------------------------------------------------------------------


def _dkd_reference(student, teacher, labels, alpha, beta, temperature):
    """The DKD paper's code path re-derived in float64 NumPy (masking by subtracting 1000 from the logit)."""
    s, t, y = student.numpy() / temperature, teacher.numpy() / temperature, labels.numpy()
    gt = np.eye(s.shape[1])[y].astype(bool)
    p, q = _softmax(t), _softmax(s)
    b_t = np.stack([p[gt], 1 - p[gt]], 1)
    b_s = np.stack([q[gt], 1 - q[gt]], 1)
    tckd = (b_t * (np.log(b_t) - np.log(b_s))).sum(1)
    p_hat = _softmax(t - 1000.0 * gt)
    log_q_hat = np.log(_softmax(s - 1000.0 * gt))
    nckd = np.where(gt, 0.0, p_hat * (np.log(np.where(gt, 1.0, p_hat)) - log_q_hat)).sum(1)
    return (alpha * tckd + beta * nckd) * temperature**2


@pytest.mark.parametrize("alpha, beta, temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_float64_rederivation(alpha, beta, temperature):
    student, teacher, labels = _inputs(scale=2.0)
    value = divergences.build("dkd", alpha=alpha, beta=beta, temperature=temperature)(
        student, teacher, labels=labels
    )
    np.testing.assert_allclose(
        value.numpy(), _dkd_reference(student, teacher, labels, alpha, beta, temperature), rtol=1e-9
    )


def test_dkd_decomposes_forward_kl_and_vanishes_at_equality():
    student, teacher, labels = _inputs()
    tckd = divergences.build("dkd", alpha=1.0, beta=0.0, temperature=1.0)(student, teacher, labels=labels)
    nckd = divergences.build("dkd", alpha=0.0, beta=1.0, temperature=1.0)(student, teacher, labels=labels)
    p_y = torch.softmax(teacher, 1).gather(1, labels[:, None])[:, 0]
    kl = divergences.build("kl")(student, teacher)
    torch.testing.assert_close(tckd + (1 - p_y) * nckd, kl)
    same = divergences.build("dkd")(teacher, teacher.clone(), labels=labels)
    torch.testing.assert_close(same, torch.zeros_like(same), atol=1e-12, rtol=0)


# ---- DIST ------------------------------------------------------------------------------------------


def _pearson_rows(a, b):
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)


def test_dist_matches_float64_rederivation_and_its_mean_is_the_papers_loss():
    student, teacher, _ = _inputs(n=9)
    d = divergences.build("dist", temperature=4.0, beta=2.0, gamma=1.5)
    value = d(student, teacher)
    q, p = _softmax(student.numpy() / 4), _softmax(teacher.numpy() / 4)
    inter = 1 - _pearson_rows(q, p)
    intra = 1 - _pearson_rows(q.T, p.T).mean()
    np.testing.assert_allclose(value.numpy(), 16 * (2.0 * inter + 1.5 * intra), rtol=1e-9)
    assert value.mean().item() == pytest.approx(16 * (2.0 * inter.mean() + 1.5 * intra), rel=1e-10)


def test_dist_masked_rows_leave_the_batch():
    student, teacher, _ = _inputs(n=9)
    mask = torch.tensor([True, False, True, True, False, True, True, True, False])
    d = divergences.build("dist")
    masked = d(student, teacher, mask=mask)
    torch.testing.assert_close(masked[mask], d(student[mask], teacher[mask]))
    assert torch.all(masked[~mask] == 0)


# ---- sinkhorn_batch --------------------------------------------------------------------------------


def test_sinkhorn_batch_plan_marginals_and_agreement_with_pot():
    student, teacher, _ = _inputs(n=12, c=10)
    d = divergences.build("sinkhorn_batch", iters=2000)
    cost = d.cost_matrix(student, teacher)
    plan = d.plan(cost)
    uniform = torch.full((12,), 1 / 12, dtype=torch.float64)
    torch.testing.assert_close(plan.sum(1), uniform, atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(0), uniform, atol=1e-4, rtol=0)
    reference = ot.sinkhorn2(
        uniform.numpy(), uniform.numpy(), cost.numpy(), reg=0.1, numItermax=5000, stopThr=1e-12
    )
    assert d(student, teacher).mean().item() == pytest.approx(float(reference), abs=1e-4)
    # pairwise L1 cost between the two sides' probability vectors
    p_s, p_t = torch.softmax(student / 2, 1), torch.softmax(teacher / 2, 1)
    torch.testing.assert_close(cost[3, 5], (p_s[3] - p_t[5]).abs().sum())


def test_sinkhorn_batch_log_solver_equals_the_papers_multiplicative_updates():
    student, teacher, _ = _inputs(n=16, c=10)
    log_values = divergences.build("sinkhorn_batch")(student, teacher)
    paper = divergences.build("sinkhorn_batch", solver="multiplicative")(student, teacher)
    torch.testing.assert_close(log_values, paper, rtol=1e-9, atol=1e-12)
    # the paper's loss: a plan of mass B (columns sum to one) times the cost, summed
    cost = divergences.build("sinkhorn_batch").cost_matrix(student, teacher)
    kernel = torch.exp(-cost / 0.1)
    for _ in range(20):
        kernel = kernel / kernel.sum(1, keepdim=True)
        kernel = kernel / kernel.sum(0, keepdim=True)
    torch.testing.assert_close(paper.sum(), (kernel * cost).sum())


def test_sinkhorn_batch_gradient_flows_through_the_plan():
    student, teacher, _ = _inputs(n=4, c=5)
    s = student.clone().requires_grad_(True)
    d = divergences.build("sinkhorn_batch", iters=5)
    assert torch.autograd.gradcheck(lambda x: d(x, teacher), (s,), eps=1e-6, atol=1e-6)
