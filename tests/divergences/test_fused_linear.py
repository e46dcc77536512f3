"""fused_linear_divergence equals the registry on materialised logits (values and gradients, float64, 1e-6)
for every pointwise member, never builds a (tokens × vocabulary) tensor, and refuses bad input in one line."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from divergence_lab import divergences
from divergence_lab.divergences import fused, fused_linear_divergence
from divergence_lab.divergences.fused_linear import MIN_LINEAR_CHUNK_ROWS, default_linear_chunk_rows
from tests.divergences.helpers import POINTWISE

NOT_POINTWISE = [name for name in divergences.names() if name not in POINTWISE]
ROWS, STUDENT_HIDDEN, TEACHER_HIDDEN, VOCABULARY = 23, 5, 6, 9
GRAD_NAMES = [f"{side} {part}" for side in ("student", "teacher") for part in ("hidden", "weight", "bias")]


def _inputs(seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)

    return {
        "student_hidden": rand(ROWS, STUDENT_HIDDEN, scale=2.0),
        "student_weight": rand(VOCABULARY, STUDENT_HIDDEN),
        "student_bias": rand(VOCABULARY),
        "teacher_hidden": rand(ROWS, TEACHER_HIDDEN, scale=2.0),
        "teacher_weight": rand(VOCABULARY, TEACHER_HIDDEN),
        "teacher_bias": rand(VOCABULARY),
    }


def _leaves(inputs: dict[str, torch.Tensor], train_teacher: bool) -> dict[str, torch.Tensor]:
    return {
        key: t.clone().requires_grad_(key.startswith("student") or train_teacher) for key, t in inputs.items()
    }


def _materialised(d, x: dict[str, torch.Tensor], mask) -> torch.Tensor:
    student = x["student_hidden"] @ x["student_weight"].T + x["student_bias"]
    teacher = x["teacher_hidden"] @ x["teacher_weight"].T + x["teacher_bias"]
    return d(student, teacher, mask=mask)


def _values_and_grads(compute, inputs, train_teacher: bool, upstream: torch.Tensor):
    x = _leaves(inputs, train_teacher)
    values = compute(x)
    wanted = [t for t in x.values() if t.requires_grad]
    grads = torch.autograd.grad((values * upstream).sum(), wanted)
    return values.detach(), grads


def _assert_matches(
    d, inputs, mask, train_teacher: bool, chunk_rows: int, seed: int = 5, per_token_upstream: bool = True
) -> None:
    """Per-token upstream gradients take the recomputing backward, one number for all rows (a mean) the
    gradients kept from forward."""
    rows = inputs["student_hidden"].shape[0]
    upstream = torch.randn(rows, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    if not per_token_upstream:
        upstream = upstream[:1].expand(rows)
    expected = _values_and_grads(lambda x: _materialised(d, x, mask), inputs, train_teacher, upstream)
    ours = _values_and_grads(
        lambda x: fused_linear_divergence(d, **x, mask=mask, chunk_rows=chunk_rows),
        inputs,
        train_teacher,
        upstream,
    )
    torch.testing.assert_close(ours[0], expected[0], rtol=1e-6, atol=1e-9, msg=lambda m: f"values: {m}")
    assert len(ours[1]) == len(expected[1])
    for what, got, want in zip(GRAD_NAMES, ours[1], expected[1], strict=False):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9, msg=lambda m, w=what: f"{w} grad: {m}")


@pytest.mark.parametrize("name", POINTWISE)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("per_token_upstream", [True, False], ids=["per-token-g", "one-g"])
def test_every_pointwise_member_matches_the_materialised_logits(
    name, temperature, masked, per_token_upstream
):
    """Trainable teacher too, an upstream gradient per token (not all ones) or one for all (a mean), 23 rows
    in blocks of 4."""
    mask = torch.rand(ROWS, generator=torch.Generator().manual_seed(3)) > 0.3 if masked else None
    d = divergences.build(name, temperature=temperature)
    _assert_matches(
        d, _inputs(), mask, train_teacher=True, chunk_rows=4, per_token_upstream=per_token_upstream
    )


class _MatmulCounter(TorchDispatchMode):
    """Counts the matrix products an operator call makes."""

    def __init__(self) -> None:
        super().__init__()
        self.products = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            self.products += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("reduce", ["mean", "weighted"])
def test_a_mean_takes_the_gradients_kept_from_forward(reduce):
    """A mean (one upstream g for every row) makes backward do no matrix product; per-token weights make it
    recompute the blocks (both sides' logits, then the student's two gradient products, per block)."""
    d = divergences.build("kl", temperature=2.0)
    x = _leaves(_inputs(seed=6), train_teacher=False)
    values = fused_linear_divergence(d, **x, chunk_rows=5)
    weights = torch.linspace(0.5, 1.5, ROWS, dtype=torch.float64)
    loss = values.mean() if reduce == "mean" else (values * weights).sum()
    with _MatmulCounter() as counter:
        loss.backward()
    blocks = -(-ROWS // 5)
    assert counter.products == (0 if reduce == "mean" else 4 * blocks)


def test_no_gradient_work_without_gradient_recording(monkeypatch):
    """Under torch.no_grad (evaluation) forward computes values only, though the inputs require gradients."""
    d = divergences.build("kl")
    requested = []  # whether a gradient was asked for, by the closed form or by the compiled kernel
    closed_form, compiled = d._fused, fused.row_kernel

    def spy(a, b, need_a, need_b):
        requested.append(need_a or need_b)
        return closed_form(a, b, need_a, need_b)

    def kernel_spy(member_name, a, b, member=None):
        kernel = compiled(member_name, a, b, member)
        if kernel is None:
            return None

        def run(student, teacher, temperature, grad):
            requested.append(grad is not None)
            return kernel(student, teacher, temperature, grad)

        return run

    monkeypatch.setattr(d, "_fused", spy)
    monkeypatch.setattr(fused, "row_kernel", kernel_spy)
    x = _leaves(_inputs(seed=7), train_teacher=True)
    with torch.no_grad():
        values = fused_linear_divergence(d, **x, chunk_rows=5)
    assert requested and not any(requested)
    assert not values.requires_grad


@pytest.mark.parametrize("chunk_rows", [1, 7, ROWS, 100, 0])
def test_block_boundaries_do_not_change_the_result(chunk_rows):
    d = divergences.build("js", temperature=2.0)
    _assert_matches(d, _inputs(seed=1), None, train_teacher=True, chunk_rows=chunk_rows)


@pytest.mark.parametrize("name", ["js", "fdiv"])  # closed form and autograd blocks
@pytest.mark.parametrize("per_token_upstream", [True, False], ids=["per-token-g", "one-g"])
def test_cache_sized_rows_inside_a_block_do_not_change_the_result(name, per_token_upstream, monkeypatch):
    """The member runs on rows of 3 inside blocks of 7 (at a large vocabulary: a few rows inside blocks of
    256), the last piece of each block shorter."""
    monkeypatch.setattr(fused, "default_chunk_rows", lambda vocabulary: 3)
    d = divergences.build(name, temperature=2.0)
    _assert_matches(
        d, _inputs(seed=8), None, train_teacher=True, chunk_rows=7, per_token_upstream=per_token_upstream
    )


@pytest.mark.parametrize("name", ["kl", "fdiv"])  # closed form and autograd blocks
def test_a_frozen_teacher_gets_no_gradient_work(name, monkeypatch):
    d = divergences.build(name, temperature=2.0)
    _assert_matches(d, _inputs(seed=2), None, train_teacher=False, chunk_rows=5)
    requested = []  # need_b of every block's gradient request
    if name == "kl":
        closed_form, compiled = d._fused, fused.row_kernel

        def spy(a, b, need_a, need_b):
            requested.append(need_b)
            return closed_form(a, b, need_a, need_b)

        def kernel_spy(member_name, a, b, member=None):  # the kernel has no teacher-gradient output at all
            kernel = compiled(member_name, a, b, member)
            if kernel is not None:
                requested.append(False)
            return kernel

        monkeypatch.setattr(d, "_fused", spy)
        monkeypatch.setattr(fused, "row_kernel", kernel_spy)
    else:
        autograd_block = fused._autograd_block

        def spy(member, a, b, need_a, need_b):
            requested.append(need_b)
            return autograd_block(member, a, b, need_a, need_b)

        monkeypatch.setattr(fused, "_autograd_block", spy)
    x = _leaves(_inputs(seed=2), train_teacher=False)
    fused_linear_divergence(d, **x, chunk_rows=5).sum().backward()
    assert requested and not any(requested)
    assert all(x[key].grad is None for key in x if key.startswith("teacher"))


def test_only_the_weight_trains():
    """A frozen student hidden state (a probe on a fixed trunk): only W_s and c_s get gradients."""
    inputs = _inputs(seed=4)
    d = divergences.build("rkl")
    x = {
        key: t.clone().requires_grad_(key in ("student_weight", "student_bias")) for key, t in inputs.items()
    }
    fused_linear_divergence(d, **x, chunk_rows=6).mean().backward()
    y = {
        key: t.clone().requires_grad_(key in ("student_weight", "student_bias")) for key, t in inputs.items()
    }
    _materialised(d, y, None).mean().backward()
    for key in ("student_weight", "student_bias"):
        torch.testing.assert_close(x[key].grad, y[key].grad, rtol=1e-6, atol=1e-9)
    assert x["student_hidden"].grad is None


def test_without_biases():
    inputs = _inputs(seed=6)
    d = divergences.build("hellinger", temperature=2.0)
    s, w = inputs["student_hidden"].requires_grad_(True), inputs["student_weight"].requires_grad_(True)
    t, tw = inputs["teacher_hidden"], inputs["teacher_weight"]
    values = fused_linear_divergence(d, s, w, t, tw, chunk_rows=4)
    grads = torch.autograd.grad(values.sum(), (s, w))
    expected = d(s @ w.T, t @ tw.T)
    torch.testing.assert_close(values, expected, rtol=1e-6, atol=1e-9)
    for got, want in zip(grads, torch.autograd.grad(expected.sum(), (s, w)), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9)


def test_masked_rows_are_zero_and_cannot_leak_nan():
    inputs = _inputs(seed=7)
    mask = torch.ones(ROWS, dtype=torch.bool)
    mask[[0, 5, 22]] = False
    inputs["student_hidden"][~mask] = float("nan")
    inputs["teacher_hidden"][~mask] = float("inf")
    x = _leaves(inputs, train_teacher=True)
    values = fused_linear_divergence(divergences.build("kl"), **x, mask=mask, chunk_rows=4)
    values.sum().backward()
    assert (values[~mask] == 0).all() and torch.isfinite(values).all()
    assert (x["student_hidden"].grad[~mask] == 0).all() and (x["teacher_hidden"].grad[~mask] == 0).all()
    assert all(torch.isfinite(t.grad).all() for t in x.values())


def test_an_all_false_mask_gives_zeros():
    x = _leaves(_inputs(seed=8), train_teacher=False)
    values = fused_linear_divergence(divergences.build("js"), **x, mask=torch.zeros(ROWS, dtype=torch.bool))
    values.sum().backward()
    assert values.shape == (ROWS,) and (values == 0).all()
    assert (x["student_weight"].grad == 0).all() and (x["student_hidden"].grad == 0).all()


def test_float32_and_bfloat16_inputs_compute_in_float32():
    reference = fused_linear_divergence(divergences.build("kl"), **_inputs(seed=9))
    x = _leaves(_inputs(seed=9, dtype=torch.bfloat16), train_teacher=False)
    values = fused_linear_divergence(divergences.build("kl"), **x)
    values.sum().backward()
    assert values.dtype == torch.float32 and x["student_weight"].grad.dtype == torch.bfloat16
    single = fused_linear_divergence(divergences.build("kl"), **_inputs(seed=9, dtype=torch.float32))
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), reference, rtol=1e-5, atol=1e-6)


def test_autocast_does_not_lower_the_precision():
    inputs = _inputs(seed=10, dtype=torch.float32)
    d = divergences.build("js")
    plain = fused_linear_divergence(d, **inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = fused_linear_divergence(d, **inputs)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, plain)


class _LargestOutput(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator produces (backward included)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("masked", [False, True])
def test_no_tokens_by_vocabulary_tensor_is_ever_built(masked):
    """64 tokens, vocabulary 50, blocks of 8: nothing larger than one (8, 50) block may appear, forward or
    backward, while the materialised path (checked as a control) builds (64, 50) tensors."""
    rows, vocabulary, hidden, block = 64, 50, 4, 8
    gen = torch.Generator().manual_seed(0)
    h_s = torch.randn(rows, hidden, generator=gen, requires_grad=True)
    w_s = torch.randn(vocabulary, hidden, generator=gen, requires_grad=True)
    h_t, w_t = torch.randn(rows, hidden, generator=gen), torch.randn(vocabulary, hidden, generator=gen)
    mask = torch.arange(rows) % 3 > 0 if masked else None
    d = divergences.build("js", temperature=2.0)
    with _LargestOutput() as fused:
        fused_linear_divergence(d, h_s, w_s, h_t, w_t, mask=mask, chunk_rows=block).sum().backward()
    with _LargestOutput() as materialised:
        d(h_s @ w_s.T, h_t @ w_t.T, mask=mask).sum().backward()
    assert materialised.largest >= rows * vocabulary
    assert 0 < fused.largest <= block * vocabulary


def test_default_block_size():
    assert default_linear_chunk_rows(128_000) >= MIN_LINEAR_CHUNK_ROWS
    assert default_linear_chunk_rows(10) > default_linear_chunk_rows(128_000)
    assert default_linear_chunk_rows(10**9) == MIN_LINEAR_CHUNK_ROWS


@pytest.mark.parametrize("name", NOT_POINTWISE)
def test_members_that_are_not_pointwise_are_refused(name):
    d = divergences.build(name)
    with pytest.raises(ValueError, match=f"needs a pointwise divergence; '{name}' is not: ") as err:
        fused_linear_divergence(d, **_inputs())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"divergence": "kl"}, "divergence must be a registry member"),
        ({"student_hidden": torch.zeros(ROWS, 4, dtype=torch.float64)}, "disagree on H"),
        (
            {"teacher_hidden": torch.zeros(ROWS - 1, TEACHER_HIDDEN, dtype=torch.float64)},
            "same number of rows",
        ),
        ({"teacher_weight": torch.zeros(3, TEACHER_HIDDEN, dtype=torch.float64)}, "vocabulary"),
        ({"student_bias": torch.zeros(3, dtype=torch.float64)}, r"student_bias must have shape \(9,\)"),
        ({"student_hidden": torch.zeros(ROWS, STUDENT_HIDDEN, dtype=torch.long)}, "floating dtype"),
        ({"teacher_weight": torch.zeros(VOCABULARY, TEACHER_HIDDEN, 1)}, "teacher_weight must be 2-D"),
        ({"student_weight": [[1.0]]}, "student_weight must be a torch.Tensor"),
        ({"mask": torch.ones(ROWS)}, "mask must be a bool tensor"),
        ({"mask": torch.ones(ROWS + 1, dtype=torch.bool)}, r"mask must have shape \(23,\)"),
        ({"chunk_rows": -1}, "chunk_rows must be an integer >= 0"),
        ({"student_bias": torch.zeros(VOCABULARY, device="meta")}, "all inputs must be on one device"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_is_refused_in_one_line(arguments, message):
    call = {"divergence": divergences.build("kl"), **_inputs()}
    call.update(arguments)
    with pytest.raises(ValueError, match=message) as err:
        fused_linear_divergence(**call)
    assert "\n" not in str(err.value)
