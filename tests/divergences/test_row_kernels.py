"""The compiled CPU row kernels equal the members' closed forms (float64, 1e-12) and the plain autograd
path; the fused path uses them only where it may, and falls back to its eager blocks with the same numbers
when they are switched off or cannot be built."""

from __future__ import annotations

import logging

import pytest
import torch

from divergence_lab import divergences
from divergence_lab.divergences import kernels
from divergence_lab.divergences.fused import fused_values_and_gradients

NAMES = list(kernels.KINDS)
pytestmark = pytest.mark.skipif(kernels._extension() is None, reason="no C++ compiler for the row kernels")


def _logits(rows: int, classes: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return 3.0 * torch.randn(rows, classes, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _pair(rows: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher logits with an equal row (tv's sign 0, hellinger's clamp) and a row of logits
    spread over ±4000 (probabilities that underflow to exactly 0)."""
    student, teacher = _logits(rows, classes, seed), _logits(rows, classes, seed + 1)
    teacher[0] = student[0]
    if rows > 1:
        student[1] *= 1000.0
        teacher[1] *= 1000.0
    return student, teacher


def _closed_form(name: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float):
    """The member's eager ``_fused`` on the scaled logits; the gradient brought back to the raw logits."""
    member = divergences.build(name, temperature=temperature)
    value, grad, _ = member._fused(student / temperature, teacher / temperature, True, False)
    return value, grad / temperature


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("shape", [(7, 1003), (3, 1), (2, 9), (5, 4096)])
def test_kernel_equals_the_closed_form_in_float64(name, temperature, shape):
    student, teacher = _pair(*shape)
    kernel = kernels.row_kernel(name, student, teacher, divergences.build(name))
    grad = torch.empty_like(student)
    values = kernel(student, teacher, temperature, grad)
    expected_values, expected_grad = _closed_form(name, student, teacher, temperature)
    # rounding is relative to the size of the log-probabilities: 1e-12 of them (the ±4000 row: 4e-9), and
    # to the size of the value and gradient themselves (χ²: up to 1/min_prob)
    scale = torch.maximum(student.abs(), teacher.abs()).amax(dim=1).clamp_min(1.0) / temperature
    value_scale = scale * (1.0 + expected_values.abs())
    grad_scale = scale * (1.0 + expected_grad.abs().amax(dim=1))
    assert torch.isfinite(values).all() and torch.isfinite(grad).all()
    assert ((values - expected_values).abs() <= 1e-12 * value_scale).all()
    assert ((grad - expected_grad).abs() <= 1e-12 * grad_scale[:, None]).all()


@pytest.mark.parametrize("name", NAMES)
def test_kernel_values_and_gradients_equal_plain_autograd(name, monkeypatch):
    """Through the registry (execution="fused", frozen teacher: the kernel runs), against execution="plain"
    (the member's ``_pointwise``) in float64."""
    calls = _spy_on_kernel(monkeypatch)
    student, teacher = _logits(6, 257, 3), _logits(6, 257, 4)
    weights = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    results = []
    for execution in ("fused", "plain"):
        member = divergences.build(name, temperature=2.0, execution=execution)
        leaf = student.clone().requires_grad_(True)
        values = member(leaf, teacher)
        (grad,) = torch.autograd.grad((values * weights).sum(), leaf)
        results.append((values.detach(), grad))
    assert calls == [name]
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)


FLOAT32_ROUNDINGS = 4  # roundings of a logit's size a float32 evaluation may accumulate (see below)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed", [5, 6, 7])
def test_float32_kernel_is_within_float32_forward_error(name, seed):
    """Against float64, the float32 kernel (and the eager float32 formula, the yardstick) stay within the
    forward error of a float32 evaluation: rounding the logits, subtracting the row maximum and the
    exponentials each cost about one unit of ``eps32 · max|logit|`` in the log-probabilities, which the value
    and the gradient carry in proportion to their own size (the same scale model as the float64 test). The
    bound depends on float32 alone, not on how a CPU's vector units order the eager sums."""
    student, teacher = _pair(4, 32000, seed=seed)
    grad32 = torch.empty(student.shape, dtype=torch.float32)
    values32 = kernels.row_kernel(name, student.float(), teacher.float(), divergences.build(name))(
        student.float(), teacher.float(), 1.0, grad32
    )
    eager_values32, eager_grad32 = _closed_form(name, student.float(), teacher.float(), 1.0)
    values64, grad64 = _closed_form(name, student, teacher, 1.0)
    unit = torch.finfo(torch.float32).eps * torch.maximum(student.abs(), teacher.abs()).amax(dim=1).clamp_min(
        1.0
    )
    value_bound = FLOAT32_ROUNDINGS * unit * (1.0 + values64.abs())
    grad_bound = (FLOAT32_ROUNDINGS * unit * (1.0 + grad64.abs().amax(dim=1)))[:, None]
    for values, grad in ((values32, grad32), (eager_values32, eager_grad32)):
        assert ((values.double() - values64).abs() <= value_bound).all()
        assert ((grad.double() - grad64).abs() <= grad_bound).all()


def test_values_only_writes_no_gradient():
    student, teacher = _pair(3, 50)
    values = kernels.row_kernel("js", student, teacher)(student, teacher, 1.0, None)
    torch.testing.assert_close(values, _closed_form("js", student, teacher, 1.0)[0], rtol=1e-12, atol=1e-12)


def _spy_on_kernel(monkeypatch) -> list[str]:
    calls = []
    real = kernels.row_kernel

    def spy(name, student, teacher, member=None):
        kernel = real(name, student, teacher, member)
        if kernel is not None:
            calls.append(name)
        return kernel

    monkeypatch.setattr("divergence_lab.divergences.fused.row_kernel", spy)
    return calls


def test_the_fused_path_uses_the_kernel_only_for_a_frozen_teacher_on_cpu(monkeypatch):
    calls = _spy_on_kernel(monkeypatch)
    student, teacher = _logits(4, 64, 6), _logits(4, 64, 7)
    member = divergences.build("rkl", temperature=2.0)
    kernel_result = fused_values_and_gradients(member, student, teacher, 0, True, False)
    assert calls == ["rkl"]
    eager_result = fused_values_and_gradients(member, student, teacher, 0, True, True)  # teacher trains
    assert calls == ["rkl"]
    torch.testing.assert_close(kernel_result[0], eager_result[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kernel_result[1], eager_result[1], rtol=1e-12, atol=1e-12)
    assert kernel_result[2] is None and eager_result[2] is not None
    assert kernels.row_kernel("gjs", student, teacher) is None  # no compiled kernel: eager blocks
    assert kernels.row_kernel("kl", student.half(), teacher.half()) is None
    assert kernels.row_kernel("kl", student, teacher.float()) is None  # mixed dtypes: eager blocks


def test_a_non_contiguous_student_is_handled(monkeypatch):
    calls = _spy_on_kernel(monkeypatch)
    student, teacher = _logits(40, 8, 8).T, _logits(8, 40, 9)
    member = divergences.build("kl")
    values, grad, _ = fused_values_and_gradients(member, student, teacher, 0, True, False)
    expected_values, expected_grad = _closed_form("kl", student, teacher, 1.0)
    assert calls == ["kl"]
    torch.testing.assert_close(values, expected_values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cause", ["switched off", "no compiler"])
def test_without_the_kernels_the_eager_blocks_give_the_same_numbers(cause, monkeypatch, caplog):
    student, teacher = _logits(5, 33, 10), _logits(5, 33, 11)
    member = divergences.build("tv", temperature=2.0)
    with_kernel = fused_values_and_gradients(member, student, teacher, 0, True, False)
    if cause == "switched off":
        monkeypatch.setenv(kernels.SWITCH, "off")
    else:

        def no_compiler():
            raise RuntimeError("Error building extension: c++: command not found")

        monkeypatch.setattr(kernels, "build", no_compiler)
    kernels._extension.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger=kernels.__name__):
            assert kernels.row_kernel("tv", student, teacher) is None
            without = fused_values_and_gradients(member, student, teacher, 0, True, False)
    finally:
        monkeypatch.undo()
        kernels._extension.cache_clear()
    reasons = {"switched off": "off (DLAB_ROW_KERNELS)", "no compiler": "unavailable (Error building"}
    expected = reasons[cause]
    assert sum(expected in record.getMessage() for record in caplog.records) == 1
    torch.testing.assert_close(with_kernel[0], without[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(with_kernel[1], without[1], rtol=1e-12, atol=1e-12)


def test_kernels_come_from_the_provider_of_the_device_type(monkeypatch):
    """The fused path asks the provider registered for the logits' device (a CUDA kernel plugs in the same
    way); a device type without one runs the eager blocks."""
    asked = []

    def provider(name, student, member):
        asked.append((name, student.device.type, member.min_prob))
        return kernels._cpu_kernel(name, student, member)

    monkeypatch.setitem(kernels.PROVIDERS, "cpu", provider)
    student, teacher = _logits(4, 40, 12), _logits(4, 40, 13)
    member = divergences.build("chi2", min_prob=0.01)
    values, grad, _ = fused_values_and_gradients(member, student, teacher, 0, True, False)
    assert asked == [("chi2", "cpu", 0.01)]
    expected_values, expected_grad, _ = member._fused(student, teacher, True, False)
    torch.testing.assert_close(values, expected_values, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    monkeypatch.delitem(kernels.PROVIDERS, "cpu")
    assert kernels.row_kernel("chi2", student, teacher, member) is None


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2", "AVX512"])
def test_a_cpu_without_avx2_gets_a_portable_build_in_its_own_folder(capability, monkeypatch):
    """The vector flags follow the CPU's capability (AVX-512 machines get the AVX2 build, whose accuracy the
    tests above check); a CPU without AVX2 compiles the kernels without them, into another folder, so a
    shared cache never hands it an AVX2 build. Where even that build fails, the eager blocks run (above)."""
    monkeypatch.setattr(kernels.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    flags = kernels._compile_flags()
    assert ("-mavx2" in flags) == (capability != "DEFAULT")
    assert "-mavx512f" not in flags and "-ffp-contract=off" in flags
    folder = kernels._build_folder()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert (folder == kernels._build_folder()) == (capability != "DEFAULT")
