"""Every divergence against an independent float64 reference (SciPy, NumPy formulas, POT)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax

from divergence_lab import divergences

RTOL, ATOL = 1e-6, 1e-12
N, C = 4, 6


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(logits / temperature, axis=-1)


def _pot_cost(p: np.ndarray, q: np.ndarray, cost: np.ndarray, eps: float) -> np.ndarray:
    import ot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stopThr=0 always "does not converge": we want the full count
        plans = [ot.sinkhorn(p[i], q[i], cost, eps, numItermax=4000, stopThr=0) for i in range(len(p))]
    return np.array([(plan * cost).sum() for plan in plans])


def _f_js(t: np.ndarray) -> np.ndarray:
    return 0.5 * (t * np.log(t) - (1 + t) * np.log((1 + t) / 2))


F_GENERATORS = {
    "kl": lambda t: t * np.log(t),
    "rkl": lambda t: -np.log(t),
    "tv": lambda t: 0.5 * np.abs(t - 1),
    "hellinger": lambda t: (np.sqrt(t) - 1) ** 2,
    "pearson": lambda t: (t - 1) ** 2,
    "neyman": lambda t: (1 - t) ** 2 / t,
    "js": _f_js,
}


def reference(name: str, params: dict, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Unscaled per-row value for target p and model q (float64 NumPy/SciPy/POT)."""
    if name == "kl":
        return rel_entr(p, q).sum(-1)
    if name == "rkl":
        return rel_entr(q, p).sum(-1)
    if name == "js":
        return jensenshannon(p, q, axis=-1) ** 2
    if name == "gjs":
        b = params.get("beta", 0.5)
        if b == 0.0:
            return rel_entr(p, q).sum(-1)
        if b == 1.0:
            return rel_entr(q, p).sum(-1)
        m = b * p + (1 - b) * q
        return b * rel_entr(p, m).sum(-1) + (1 - b) * rel_entr(q, m).sum(-1)
    if name == "skl":
        a = params.get("alpha", 0.1)
        return rel_entr(p, a * p + (1 - a) * q).sum(-1)
    if name == "srkl":
        a = params.get("alpha", 0.1)
        return rel_entr(q, (1 - a) * p + a * q).sum(-1)
    if name == "tv":
        return 0.5 * np.abs(p - q).sum(-1)
    if name == "hellinger":
        return 1 - np.sqrt(p * q).sum(-1)
    if name == "chi2":
        return ((p - q) ** 2 / q).sum(-1)
    if name == "neyman_chi2":
        return ((p - q) ** 2 / p).sum(-1)
    if name == "alpha":
        a = params.get("alpha", 0.0)
        return 4 / (1 - a * a) * (1 - (p ** ((1 - a) / 2) * q ** ((1 + a) / 2)).sum(-1))
    if name == "fdiv":
        f = F_GENERATORS[params.get("generator", "kl")]
        return (q * f(p / q)).sum(-1)
    if name == "cs":
        return np.log((p**2).sum(-1)) + np.log((q**2).sum(-1)) - 2 * np.log((p * q).sum(-1))
    if name in ("sinkhorn", "sinkhorn_div"):
        c = p.shape[-1]
        idx = np.arange(c)
        cost = params.get("cost", "zero_one")
        m = np.abs(idx[:, None] - idx[None, :]).astype(float)
        if cost == "zero_one":
            m = np.minimum(m, 1.0)
        m = m / m.max()
        eps = params.get("epsilon", 0.1)
        if name == "sinkhorn":
            return _pot_cost(p, q, m, eps)
        return _pot_cost(p, q, m, eps) - 0.5 * _pot_cost(p, p, m, eps) - 0.5 * _pot_cost(q, q, m, eps)
    raise KeyError(name)


CASES = [
    ("kl", {}),
    ("rkl", {}),
    ("js", {}),
    ("gjs", {}),
    ("gjs", {"beta": 0.2}),
    ("gjs", {"beta": 0.0}),
    ("gjs", {"beta": 1.0}),
    ("skl", {}),
    ("skl", {"alpha": 0.5}),
    ("srkl", {}),
    ("srkl", {"alpha": 0.7}),
    ("tv", {}),
    ("hellinger", {}),
    ("chi2", {}),
    ("neyman_chi2", {}),
    ("alpha", {}),
    ("alpha", {"alpha": 0.5}),
    ("alpha", {"alpha": -0.7}),
    ("alpha", {"alpha": 2.5}),
    ("alpha", {"alpha": -3.0}),
    *[("fdiv", {"generator": g}) for g in F_GENERATORS],
    ("cs", {}),
    # enough iterations that our solver and POT's both converge to machine precision
    ("sinkhorn", {"iters": 400, "epsilon": 0.2}),
    ("sinkhorn", {"iters": 400, "epsilon": 0.2, "cost": "abs_diff"}),
    ("sinkhorn", {"iters": 1500, "epsilon": 0.1}),
    ("sinkhorn_div", {"iters": 400, "epsilon": 0.2}),
    ("sinkhorn_div", {"iters": 400, "epsilon": 0.25, "cost": "abs_diff"}),
]


def _ids(case: tuple[str, dict]) -> str:
    name, params = case
    return name + "".join(f"-{k}={v}" for k, v in params.items())


@pytest.fixture(scope="module")
def logits() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234)
    return rng.normal(0, 2, (N, C)), rng.normal(0, 2, (N, C))


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
@pytest.mark.parametrize(("temperature", "t_squared"), [(1.0, True), (2.5, True), (2.5, False)])
def test_matches_reference(case, temperature, t_squared, logits) -> None:
    name, params = case
    student, teacher = logits
    d = divergences.build(name, temperature=temperature, t_squared=t_squared, **params)
    got = d(torch.from_numpy(student), torch.from_numpy(teacher))
    assert got.shape == (N,) and got.dtype == torch.float64
    want = reference(name, params, _probs(teacher, temperature), _probs(student, temperature))
    if t_squared:
        want = want * temperature**2
    np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["kl", "js", "hellinger", "sinkhorn_div"])
def test_row_mask(name, logits) -> None:
    student, teacher = (torch.from_numpy(x).clone() for x in logits)
    mask = torch.tensor([True, False, True, False])
    student[1] = float("nan")  # whatever a masked row holds must not leak into values or gradients
    student.requires_grad_(True)
    d = divergences.build(name, temperature=2.0)
    got = d(student, teacher, mask=mask)
    assert got[1] == 0 and got[3] == 0
    full = d(student.detach().nan_to_num(0.0), teacher)
    torch.testing.assert_close(got[mask], full[mask], rtol=0, atol=0)
    got.sum().backward()
    assert torch.isfinite(student.grad).all()
    assert (student.grad[~mask] == 0).all() and (student.grad[mask] != 0).any()


@pytest.mark.parametrize(
    ("dtype", "out"),
    [
        (torch.float64, torch.float64),
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
    ],
)
def test_output_dtype(dtype, out, logits) -> None:
    student, teacher = (torch.from_numpy(x).to(dtype) for x in logits)
    for name in ("kl", "tv", "sinkhorn"):
        value = divergences.build(name)(student, teacher)
        assert value.dtype == out
        ref = divergences.build(name)(student.double(), teacher.double())
        torch.testing.assert_close(value.double(), ref, rtol=1e-4, atol=1e-5)


def test_named_fdiv_generators_match_dedicated_members(logits) -> None:
    student, teacher = (torch.from_numpy(x) for x in logits)
    pairs = {
        "kl": ("kl", 1),
        "rkl": ("rkl", 1),
        "tv": ("tv", 1),
        "hellinger": ("hellinger", 2),
        "pearson": ("chi2", 1),
        "neyman": ("neyman_chi2", 1),
        "js": ("js", 1),
    }
    for generator, (member, factor) in pairs.items():
        f = divergences.build("fdiv", generator=generator, temperature=1.5)(student, teacher)
        dedicated = divergences.build(member, temperature=1.5)(student, teacher)
        torch.testing.assert_close(f, factor * dedicated, rtol=1e-10, atol=1e-12)


def test_fdiv_callable_generator(logits) -> None:
    student, teacher = (torch.from_numpy(x) for x in logits)
    d = divergences.build("fdiv", generator=lambda t: t * torch.log(t))
    torch.testing.assert_close(d(student, teacher), divergences.build("kl")(student, teacher))
    assert not d.symmetric and "lambda" in repr(d)


def test_alpha_zero_is_four_hellinger(logits) -> None:
    student, teacher = (torch.from_numpy(x) for x in logits)
    a = divergences.build("alpha", alpha=0.0)(student, teacher)
    h = divergences.build("hellinger")(student, teacher)
    torch.testing.assert_close(a, 4 * h)


def test_sinkhorn_explicit_cost_matrix(logits) -> None:
    student, teacher = (torch.from_numpy(x) for x in logits)
    idx = np.arange(C)
    matrix = np.abs(idx[:, None] - idx[None, :]).tolist()
    explicit = divergences.build("sinkhorn", cost=matrix, iters=30)(student, teacher)
    named = divergences.build("sinkhorn", cost="abs_diff", iters=30)(student, teacher)
    torch.testing.assert_close(explicit, named)
    raw = divergences.build("sinkhorn", cost=torch.tensor(matrix), normalize_cost=False, epsilon=0.5, iters=9)
    scaled = divergences.build("sinkhorn", cost="abs_diff", epsilon=0.5 / (C - 1), iters=9)
    torch.testing.assert_close(raw(student, teacher), (C - 1) * scaled(student, teacher))
