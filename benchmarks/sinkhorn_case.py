"""One Sinkhorn case: B per-row problems of C classes with a shared 0-1-normalised |i-j| cost, forward only.

    python -m benchmarks.sinkhorn_case <impl> <rows> <classes> <iters> [repeats]

impl: ``pot_loop`` (``ot.sinkhorn2`` once per row, NumPy float64), ``pot_batch`` (``ot.batch.solve_batch``,
log-domain Sinkhorn, torch float32), ``ours`` (the registry's ``sinkhorn``, float32). Every impl runs the
same fixed number of iterations; the relative error is against a converged float64 solution (our solver
with a 1e-10 marginal tolerance, checked against POT's converged solution in the test suite).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import ot
import torch

from benchmarks.measure import emit, median_time

EPSILON = 0.1


def problem(rows: int, classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    a = torch.softmax(2 * torch.randn(rows, classes, generator=generator, dtype=torch.float64), -1)
    b = torch.softmax(2 * torch.randn(rows, classes, generator=generator, dtype=torch.float64), -1)
    idx = torch.arange(classes, dtype=torch.float64)
    cost = (idx[:, None] - idx[None, :]).abs()
    return a, b, cost / cost.max()


def converged(a: torch.Tensor, b: torch.Tensor, cost: torch.Tensor) -> np.ndarray:
    """Float64 transport costs at convergence (marginal error < 1e-10), from our batched solver."""
    from divergence_lab.divergences.transport import sinkhorn_log

    with torch.no_grad():
        return sinkhorn_log(a.log(), b.log(), cost, EPSILON, iters=5000, tol=1e-10).numpy()


def main() -> None:
    impl, rows, classes, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    repeats = int(sys.argv[5]) if len(sys.argv) > 5 else (1 if classes >= 1000 else 3)
    a, b, cost = problem(rows, classes)
    if impl == "pot_loop":
        a_np, b_np, cost_np = a.numpy(), b.numpy(), cost.numpy()

        def run() -> np.ndarray:
            return np.array(
                [
                    ot.sinkhorn2(
                        a_np[i],
                        b_np[i],
                        cost_np,
                        EPSILON,
                        numItermax=iters,
                        stopThr=0.0,
                        method="sinkhorn_log",
                    )
                    for i in range(rows)
                ]
            )
    elif impl == "pot_batch":
        a32, b32, cost32 = a.float(), b.float(), cost.float().expand(rows, -1, -1)

        def run() -> np.ndarray:
            result = ot.batch.solve_batch(
                cost32, EPSILON, a32, b32, max_iter=iters, tol=0.0, method="log_sinkhorn", grad="detach"
            )
            return (result.plan * cost32).sum((-2, -1)).numpy()
    else:
        from divergence_lab import divergences

        divergence = divergences.build("sinkhorn", cost="abs_diff", epsilon=EPSILON, iters=iters)
        # the registry takes logits: log-probabilities are logits of the same distributions
        log_a, log_b = a.log().float(), b.log().float()

        def run() -> np.ndarray:
            with torch.no_grad():
                return divergence(log_b, log_a).numpy()

    start = time.perf_counter()
    values = run()
    seconds = time.perf_counter() - start if repeats <= 1 else median_time(run, repeats=repeats, warmup=0)
    reference = converged(a, b, cost)
    error = float(np.max(np.abs(values - reference) / np.abs(reference)))
    emit(
        {
            "impl": impl,
            "rows": rows,
            "classes": classes,
            "iters": iters,
            "seconds": seconds,
            "rel_error": error,
        }
    )


if __name__ == "__main__":
    main()
