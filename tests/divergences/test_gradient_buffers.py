"""The fused path reuses its gradient buffer only when no one can still read the previous gradient."""

from __future__ import annotations

import pytest
import torch

from divergence_lab import divergences
from divergence_lab.divergences.buffers import gradient_buffer, release_gradient_buffers

ROWS, CLASSES, HIDDEN = 16, 300, 8


@pytest.fixture(autouse=True)
def fresh_buffers():
    release_gradient_buffers()
    yield
    release_gradient_buffers()


def _network_and_data(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(HIDDEN, CLASSES).double()
    hidden = torch.randn(ROWS, HIDDEN, generator=generator, dtype=torch.float64)
    teacher = 3 * torch.randn(ROWS, CLASSES, generator=generator, dtype=torch.float64)
    return layer, hidden, teacher


def _plain_gradient(name: str, logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    leaf = logits.detach().clone().requires_grad_(True)
    divergences.build(name, execution="plain")(leaf, teacher).mean().backward()
    return leaf.grad


@pytest.mark.parametrize("name", ["kl", "js", "gjs", "alpha"])
def test_a_consumed_gradient_buffer_is_reused_and_the_gradients_stay_exact(name):
    layer, hidden, teacher = _network_and_data()
    member = divergences.build(name, execution="fused")
    seen = []
    for step in range(3):
        logits = layer(hidden + step)
        logits.register_hook(lambda grad: seen.append(grad.data_ptr()))  # reads the pointer, keeps nothing
        layer.zero_grad()
        member(logits, teacher).mean().backward()
        expected = _plain_gradient(name, logits, teacher)
        torch.testing.assert_close(layer.bias.grad, expected.sum(0), rtol=1e-10, atol=1e-12)
    assert seen[0] == seen[1] == seen[2]


def test_a_gradient_someone_still_holds_is_never_overwritten():
    layer, hidden, teacher = _network_and_data()
    member = divergences.build("kl", execution="fused")
    kept = []
    logits = layer(hidden)
    logits.register_hook(kept.append)  # keeps the gradient tensor itself
    member(logits, teacher).mean().backward()
    first = kept[0].clone()
    second_logits = layer(hidden + 1)
    second_logits.register_hook(kept.append)
    member(second_logits, teacher).mean().backward()
    assert torch.equal(kept[0], first)
    assert kept[0].data_ptr() != kept[1].data_ptr()


def test_an_accumulating_leaf_gradient_adds_the_steps():
    """A leaf's ``.grad`` kept across steps holds the buffer: the second step gets fresh memory and the
    accumulated gradient is the sum of both."""
    _, _, teacher = _network_and_data()
    generator = torch.Generator().manual_seed(1)
    logits = (3 * torch.randn(ROWS, CLASSES, generator=generator, dtype=torch.float64)).requires_grad_(True)
    member = divergences.build("js", execution="fused")
    member(logits, teacher).mean().backward()
    member(logits, teacher * 0.5).mean().backward()
    expected = _plain_gradient("js", logits, teacher) + _plain_gradient("js", logits, teacher * 0.5)
    torch.testing.assert_close(logits.grad, expected, rtol=1e-10, atol=1e-12)


def test_buffers_grow_to_the_largest_request_and_are_views_of_one_storage():
    small = gradient_buffer(torch.empty(4, 10))
    pointer = small.data_ptr()
    del small
    larger = gradient_buffer(torch.empty(8, 10))
    assert larger.shape == (8, 10) and larger.is_contiguous()
    del larger
    again = gradient_buffer(torch.empty(2, 5))
    assert again.shape == (2, 5) and again.data_ptr() != pointer  # the grown buffer
    busy = gradient_buffer(torch.empty(2, 5))
    assert busy.data_ptr() != again.data_ptr()  # the first view is still alive: a fresh tensor
    assert gradient_buffer(torch.empty(3, dtype=torch.float64)).dtype == torch.float64
