"""Gradients: float64 gradcheck for every member, finite values/gradients at extreme logits, bf16 inputs."""

from __future__ import annotations

import pytest
import torch

from divergence_lab import divergences
from tests.divergences.helpers import call

FEW_ITERS = {"sinkhorn": {"iters": 5}, "sinkhorn_div": {"iters": 5}}
GRAD_CONFIGS = [(name, FEW_ITERS.get(name, {})) for name in divergences.names()] + [
    ("gjs", {"beta": 0.3}),
    ("gjs", {"beta": 0.0}),
    ("skl", {"alpha": 0.0}),
    ("alpha", {"alpha": 0.5}),
    ("alpha", {"alpha": 2.0}),
    ("alpha", {"alpha": -1.0}),
    *[("fdiv", {"generator": g}) for g in ("rkl", "tv", "hellinger", "pearson", "neyman", "js")],
    ("fdiv", {"generator": lambda t: (t - 1) ** 4}),
    ("sinkhorn", {"iters": 5, "cost": "abs_diff", "epsilon": 0.5}),
    ("sinkhorn", {"iters": 5, "cost": [[0.0, 1.0, 3.0, 2.0, 1.0]] * 5}),
]
IDS = [
    name + "".join(f"-{k}={v if isinstance(v, (str, float, int)) else '...'}" for k, v in p.items())
    for name, p in GRAD_CONFIGS
]


@pytest.mark.parametrize(("name", "params"), GRAD_CONFIGS, ids=IDS)
def test_gradcheck(name, params) -> None:
    gen = torch.Generator().manual_seed(7)
    student = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)  # no p = q ties
    d = divergences.build(name, temperature=1.5, **params)
    assert torch.autograd.gradcheck(
        lambda s, t: call(d, s, t), (student, teacher), eps=1e-6, atol=1e-5, rtol=1e-4
    )


def _extreme_pairs(dtype: torch.dtype) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    n, c = 4, 6
    uniform = (torch.rand(n, c, generator=gen) * 2 - 1) * 1e4
    one_hot_teacher = torch.full((n, c), -1e4)
    one_hot_teacher[torch.arange(n), torch.arange(n)] = 1e4
    one_hot_student = torch.full((n, c), -1e4)
    one_hot_student[torch.arange(n), torch.arange(n) + 1] = 1e4  # disjoint from the teacher's mode
    near_one_hot = one_hot_teacher.clone()
    near_one_hot[:, -1] = 9.99e3
    return [
        ("random", uniform.to(dtype), ((torch.rand(n, c, generator=gen) * 2 - 1) * 1e4).to(dtype)),
        ("onehot-vs-random", uniform.to(dtype), one_hot_teacher.to(dtype)),
        ("onehot-disjoint", one_hot_student.to(dtype), one_hot_teacher.to(dtype)),
        ("onehot-equal", one_hot_teacher.clone().to(dtype), one_hot_teacher.to(dtype)),
        ("onehot-near", near_one_hot.to(dtype), one_hot_teacher.to(dtype)),
    ]


# Defaults plus the parameter variants above, except user callables (whose overflow is the user's business).
FINITE_CONFIGS = [
    *[(name, {}) for name in divergences.names()],
    *[
        (n, p)
        for n, p in GRAD_CONFIGS
        if p and not n.startswith("sinkhorn") and not callable(p.get("generator"))
    ],
    ("alpha", {"alpha": -3.0}),
    ("alpha", {"alpha": 1 - 1e-6}),
    ("skl", {"alpha": 1.0}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_finite_at_extreme_logits(dtype, temperature) -> None:
    for label, student, teacher in _extreme_pairs(dtype):
        for name, params in FINITE_CONFIGS:
            s = student.clone().requires_grad_(True)
            t = teacher.clone().requires_grad_(True)
            value = call(divergences.build(name, temperature=temperature, **params), s, t)
            assert value.dtype == dtype
            assert torch.isfinite(value).all(), (name, params, label, value)
            grads = torch.autograd.grad(value.sum(), (s, t), allow_unused=True)  # skl alpha=1 ignores s
            assert all(g is None or torch.isfinite(g).all() for g in grads), (name, params, label)


@pytest.mark.parametrize("name", divergences.names())
def test_bfloat16_inputs(name) -> None:
    gen = torch.Generator().manual_seed(5)
    for scale in (3.0, 1e4):
        student = (torch.randn(4, 6, generator=gen) * scale).to(torch.bfloat16).requires_grad_(True)
        teacher = (torch.randn(4, 6, generator=gen) * scale).to(torch.bfloat16)
        value = call(divergences.build(name, temperature=0.5), student, teacher)
        assert value.dtype == torch.float32
        assert torch.isfinite(value).all()
        value.sum().backward()
        assert student.grad.dtype == torch.bfloat16 and torch.isfinite(student.grad).all()
