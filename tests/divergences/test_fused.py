"""The chunked, fused path agrees with plain autograd for every pointwise member (float64, 1e-6)."""

from __future__ import annotations

import pytest
import torch

from divergence_lab import divergences
from divergence_lab.divergences.base import AUTO_FUSED_ELEMENTS
from divergence_lab.divergences.fused import default_chunk_rows
from tests.divergences.helpers import POINTWISE

#: The members with a closed-form ``_fused``, each an optimisation of its ``_pointwise``.
CLOSED_FORMS = {
    "kl",
    "rkl",
    "js",
    "gjs",
    "skl",
    "srkl",
    "tv",
    "hellinger",
    "chi2",
    "neyman_chi2",
    "alpha",
    "cs",
}

VARIANTS = [(name, {}) for name in POINTWISE] + [
    ("gjs", {"beta": 0.2}),
    ("gjs", {"beta": 0.0}),
    ("gjs", {"beta": 1.0}),
    ("skl", {"alpha": 0.3}),
    ("skl", {"alpha": 0.0}),
    ("srkl", {"alpha": 0.6}),
    ("srkl", {"alpha": 0.0}),
    ("alpha", {"alpha": 0.6}),
    ("alpha", {"alpha": -2.0}),
    ("alpha", {"alpha": 1.0}),
    ("alpha", {"alpha": -0.99999}),
    ("alpha", {"alpha": 3.0}),
    ("chi2", {"min_prob": 0.05}),
    ("neyman_chi2", {"min_prob": 0.05}),
    *[("fdiv", {"generator": g}) for g in ("rkl", "tv", "hellinger", "pearson", "neyman", "js")],
    ("sinkhorn", {"cost": "abs_diff", "iters": 10}),
    ("sinkhorn_div", {"iters": 10}),
]


def _values_and_grads(name, params, student, teacher, mask, execution, **common):
    d = divergences.build(name, execution=execution, chunk_rows=8, **params, **common)
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    values = d(s, t, mask=mask)
    weights = torch.linspace(-1.0, 2.0, len(values), dtype=values.dtype)  # an arbitrary upstream gradient
    grads = torch.autograd.grad((values * weights).sum(), (s, t))
    return values.detach(), *grads


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=lambda v: str(v))
@pytest.mark.parametrize(("temperature", "t_squared"), [(1.0, True), (2.5, True), (0.5, False)])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_matches_plain_autograd(name, params, temperature, t_squared, masked):
    gen = torch.Generator().manual_seed(11)
    student = 4 * torch.randn(37, 9, generator=gen, dtype=torch.float64)  # 37 rows: a partial last block
    teacher = 4 * torch.randn(37, 9, generator=gen, dtype=torch.float64)
    mask = torch.rand(37, generator=gen) > 0.3 if masked else None
    common = {"temperature": temperature, "t_squared": t_squared}
    plain = _values_and_grads(name, params, student, teacher, mask, "plain", **common)
    fused = _values_and_grads(name, params, student, teacher, mask, "fused", **common)
    for reference, ours, what in zip(plain, fused, ("values", "student grad", "teacher grad"), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-9, msg=lambda m, w=what: f"{w}: {m}")


@pytest.mark.parametrize("name", POINTWISE)
def test_the_members_with_a_closed_form_run_it_on_the_fused_path(name, monkeypatch):
    """With both inputs trained (no row kernel) the fused path calls ``_fused`` exactly where a member has
    one, so the comparison above pins each closed form, not ``_pointwise`` differentiated twice."""
    d = divergences.build(name, execution="fused", chunk_rows=4)
    closed_form, calls = d._fused, []

    def spy(*args):
        calls.append(args[0].shape[0])  # rows of the block
        return closed_form(*args)

    monkeypatch.setattr(d, "_fused", spy)
    student = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    d(student, teacher).sum().backward()
    assert d.has_closed_form() == (name in CLOSED_FORMS)
    assert calls == ([4, 4, 2] if name in CLOSED_FORMS else [])


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_fused_is_finite_at_extreme_logits(name):
    gen = torch.Generator().manual_seed(2)
    student = ((torch.rand(16, 12, generator=gen) * 2 - 1) * 1e4).requires_grad_(True)
    teacher = torch.full((16, 12), -1e4)
    teacher[:, 0] = 1e4
    value = divergences.build(name, temperature=0.1, execution="fused")(student, teacher)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(student.grad).all()


def test_only_the_inputs_that_need_a_gradient_get_one():
    student = torch.randn(20, 7, requires_grad=True)
    teacher = torch.randn(20, 7)  # a frozen teacher: no gradient tensor is allocated for it
    d = divergences.build("js", execution="fused", chunk_rows=4)
    d(student, teacher).mean().backward()
    reference = student.detach().clone().requires_grad_(True)
    divergences.build("js", execution="plain")(reference, teacher).mean().backward()
    torch.testing.assert_close(student.grad, reference.grad)


def test_bfloat16_inputs_on_the_fused_path():
    student = torch.randn(10, 300).to(torch.bfloat16).requires_grad_(True)
    teacher = torch.randn(10, 300).to(torch.bfloat16)
    value = divergences.build("kl", execution="fused")(student, teacher)
    value.sum().backward()
    assert value.dtype == torch.float32 and student.grad.dtype == torch.bfloat16
    assert torch.isfinite(student.grad.float()).all()


def test_auto_switches_on_size():
    d = divergences.build("kl")
    small = torch.empty(64, 100, device="meta")
    large = torch.empty(AUTO_FUSED_ELEMENTS // 1000 + 1, 1000, device="meta")
    assert not d.uses_fused_path(small) and d.uses_fused_path(large)
    assert not divergences.build("kl", execution="plain").uses_fused_path(large)
    assert divergences.build("kl", execution="fused").uses_fused_path(small)
    assert default_chunk_rows(32000) == 16 and default_chunk_rows(10) == (1 << 19) // 10


def test_bad_execution_settings_are_refused():
    with pytest.raises(ValueError, match="execution must be one of auto, fused, plain"):
        divergences.build("kl", execution="fast")
    with pytest.raises(ValueError, match="chunk_rows must be an integer >= 0"):
        divergences.build("kl", chunk_rows=-1)
