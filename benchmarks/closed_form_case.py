"""One member on the fused path, forward + backward of the batch mean, three ways:

    python -m benchmarks.closed_form_case <name> <ours|eager|blocks> <rows> <classes> [repeats]

``ours``: as users get it (the compiled row kernel where the member has one, else its eager closed form);
``eager``: the member's eager closed-form ``_fused`` (row kernels off); ``blocks``: its own formula under
autograd block by block (row kernels off, ``_fused`` swapped out in this process), the fused path of a
member without a closed form. ``name`` may carry one parameter, ``gjs:beta=0.5``.
"""

from __future__ import annotations

import os
import sys

import torch

from benchmarks.measure import emit, median_time


def member(spec: str):
    from divergence_lab import divergences

    name, _, parameter = spec.partition(":")
    params = {}
    if parameter:
        key, value = parameter.split("=")
        params[key] = float(value)
    return divergences.build(name, t_squared=False, execution="fused", **params)


def main() -> None:
    spec, impl, rows, classes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 3
    if impl != "ours":
        os.environ["DLAB_ROW_KERNELS"] = "off"
    divergence = member(spec)
    if impl == "blocks":
        from divergence_lab.divergences import PointwiseDivergence

        type(divergence)._fused = PointwiseDivergence._fused  # the members' default: no closed form
    generator = torch.Generator().manual_seed(0)
    student = (3 * torch.randn(rows, classes, generator=generator)).requires_grad_(True)
    teacher = 3 * torch.randn(rows, classes, generator=generator)

    def step() -> None:
        student.grad = None
        divergence(student, teacher).mean().backward()

    emit({"member": spec, "impl": impl, "seconds": median_time(step, repeats=repeats, warmup=1)})


if __name__ == "__main__":
    main()
