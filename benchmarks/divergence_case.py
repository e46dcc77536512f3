"""One divergence case: forward + backward (student side) of the batch mean, in this process.

    python -m benchmarks.divergence_case <name> <impl> <rows> <classes> [repeats]

impl: ``reference`` (plain autograd, log space, written here independently of the registry),
``compiled`` (``torch.compile`` of the reference), ``ours`` (the registry member as users get it:
``execution="auto"``, i.e. the fused path from 2^22 elements on, the plain path below), ``floor`` (the
work no implementation avoids: ``FLOOR_EXP_PASSES`` exp passes over the N·C elements at the in-cache exp
rate, plus one read of both inputs and one write of the gradient at streaming speed).
Peak memory is measured once, before any timing, as the growth of the resident set over the inputs.
``first_call_seconds``: what the first call costs before the timed ones: compiling (``compiled``), loading
the compiled row kernels (``ours``; built beforehand by ``make install``).
"""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks.measure import current_rss_bytes, emit, median_time, peak_rss_bytes


def reference(name: str, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    log_q = F.log_softmax(student, dim=-1)
    log_p = F.log_softmax(teacher, dim=-1)
    if name == "kl":
        return (log_p.exp() * (log_p - log_q)).sum(-1)
    if name == "rkl":
        return (log_q.exp() * (log_q - log_p)).sum(-1)
    if name == "js":
        log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
        return 0.5 * ((log_p.exp() * (log_p - log_m)).sum(-1) + (log_q.exp() * (log_q - log_m)).sum(-1))
    if name == "tv":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    if name == "hellinger":
        return -torch.expm1(torch.logsumexp(0.5 * (log_p + log_q), dim=-1))
    raise ValueError(name)


#: exp passes of the floor, as the performance goal defines it: the two log-normalisers (student and teacher),
#: then the two probabilities for the value and gradient. The row kernels keep the normalisers' exponentials
#: and need only the first two (js: and one log), so they can run below this floor.
FLOOR_EXP_PASSES = 4
EXP_BLOCK_ELEMENTS = 1 << 16  # the in-cache exp rate is measured on a block this size (256 KiB)


def floor_seconds(student: torch.Tensor, teacher: torch.Tensor, repeats: int) -> tuple[float, float, float]:
    """(floor, exp rate in elements/s, streaming time): the exp rate on a cache-resident block, the time of
    ``add(student, teacher, out=gradient)`` over the whole inputs (read both, write one)."""
    block = student.detach().reshape(-1)[:EXP_BLOCK_ELEMENTS].clone()
    out = torch.empty_like(block)
    passes = max(1, student.numel() // EXP_BLOCK_ELEMENTS)

    def exp_passes() -> None:
        for _ in range(passes):
            torch.exp(block, out=out)

    exp_rate = passes * block.numel() / median_time(exp_passes, repeats=repeats, warmup=1)
    gradient = torch.zeros_like(student.detach())  # first-touched here, as a reused gradient buffer would be
    inputs = student.detach()
    stream = median_time(lambda: torch.add(inputs, teacher, out=gradient), repeats=repeats, warmup=1)
    return FLOOR_EXP_PASSES * student.numel() / exp_rate + stream, exp_rate, stream


def main() -> None:
    name, impl, rows, classes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    generator = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(rows, classes, generator=generator)).requires_grad_(True)
    teacher = 3 * torch.randn(rows, classes, generator=generator)
    first_call_s = None
    case = {"name": name, "impl": impl, "rows": rows, "classes": classes}
    if impl == "floor":
        seconds, exp_rate, stream = floor_seconds(student, teacher, repeats)
        emit({**case, "seconds": seconds, "exp_elements_per_s": exp_rate, "stream_seconds": stream})
        return
    if impl == "ours":
        from divergence_lab import divergences
        from divergence_lab.divergences import kernels

        start = time.perf_counter()
        kernels._extension()  # loads the compiled row kernels (built by make install)
        first_call_s = time.perf_counter() - start
        divergence = divergences.build(name, t_squared=False)

        def loss() -> torch.Tensor:
            return divergence(student, teacher).mean()
    else:
        function = reference
        if impl == "compiled":
            function = torch.compile(reference, dynamic=False)

        def loss() -> torch.Tensor:
            return function(name, student, teacher).mean()

    def step() -> None:
        student.grad = None
        loss().backward()

    if impl == "compiled":
        start = time.perf_counter()
        step()  # compilation happens here (not part of the memory or time measurement)
        first_call_s = time.perf_counter() - start
        student.grad = None
    baseline = current_rss_bytes()
    step()
    extra = peak_rss_bytes() - baseline
    seconds = median_time(step, repeats=repeats, warmup=0)
    emit(
        {
            **case,
            "seconds": seconds,
            "extra_bytes": max(0, extra),
            "gradient_bytes": student.numel() * student.element_size(),
            "first_call_seconds": first_call_s,
        }
    )


if __name__ == "__main__":
    main()
