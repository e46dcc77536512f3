"""One fused-linear case: forward + backward of the token mean, from last hidden states and output weights.

    python -m benchmarks.fused_linear_case <name> <variant> <tokens> <hidden> <vocabulary> [repeats]

variant: ``registry`` (logits materialised as h Wᵀ, then the registry member as users get it:
``execution="auto"``, i.e. the fused chunked path on logits from 2^22 elements on), ``plain`` (materialised
logits, the member with ``execution="plain"``: the log-softmax formula under autograd), ``fused_linear``
(:func:`fused_linear_divergence`: no logits). The student's hidden states and weight are trained, the
teacher is frozen; fp32, T = 1, no bias.

Memory: the process's resident-set high-water mark is reset once the inputs exist, and the growth of the
peak over that baseline during the first step is the "extra memory" (it includes the gradients of the
inputs). The first step is also timed; with ``repeats`` > 0 the time is instead the median of that many
further steps. ``cpu_seconds`` (user + system time of the process, all threads) is recorded beside the
wall time: it is less sensitive to other jobs on a shared machine. Allocations are capped at the memory
available when the case starts (minus a margin), so a variant that does not fit fails with an
out-of-memory record instead of pushing the machine into the kernel's OOM killer.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time

import torch

from benchmarks.measure import current_rss_bytes, emit, peak_rss_bytes
from divergence_lab import divergences
from divergence_lab.divergences import fused_linear_divergence

VARIANTS = ("registry", "plain", "fused_linear")
#: Memory left to everything else on the machine while a case runs.
MEMORY_MARGIN_BYTES = 2 * 1024**3


def _field_bytes(path: str, field: str) -> int:
    """A ``Name:   123 kB`` line of a /proc file, in bytes."""
    with open(path) as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{path} has no {field}")


def cap_allocations() -> int:
    """Limit this process's private memory to what is available now minus a margin; return that budget."""
    budget = max(0, _field_bytes("/proc/meminfo", "MemAvailable") - MEMORY_MARGIN_BYTES)
    limit = _field_bytes("/proc/self/status", "VmData") + budget
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.RLIM_INFINITY))
    return budget


def reset_peak_rss() -> None:
    """Make the resident-set high-water mark (``ru_maxrss``) start again from the current resident set."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def main() -> None:
    name, variant = sys.argv[1], sys.argv[2]
    tokens, hidden, vocabulary = (int(x) for x in sys.argv[3:6])
    repeats = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    if variant not in VARIANTS:
        raise SystemExit(f"variant must be one of {', '.join(VARIANTS)} (got {variant!r})")
    generator = torch.Generator().manual_seed(0)
    scale = hidden**-0.5  # logits of order 1
    student_hidden = torch.randn(tokens, hidden, generator=generator).mul_(3).requires_grad_(True)
    student_weight = torch.randn(vocabulary, hidden, generator=generator).mul_(scale).requires_grad_(True)
    teacher_hidden = torch.randn(tokens, hidden, generator=generator).mul_(3)
    teacher_weight = torch.randn(vocabulary, hidden, generator=generator).mul_(scale)
    inputs = (student_hidden, student_weight, teacher_hidden, teacher_weight)
    execution = "plain" if variant == "plain" else "auto"
    divergence = divergences.build(name, t_squared=False, execution=execution)

    def loss() -> torch.Tensor:
        if variant == "fused_linear":
            return fused_linear_divergence(divergence, *inputs).mean()
        return divergence(student_hidden @ student_weight.T, teacher_hidden @ teacher_weight.T).mean()

    cpu_seconds = []

    def step() -> float:
        student_hidden.grad = student_weight.grad = None
        start, start_cpu = time.perf_counter(), os.times()
        loss().backward()
        end_cpu = os.times()
        cpu_seconds.append(end_cpu.user + end_cpu.system - start_cpu.user - start_cpu.system)
        return time.perf_counter() - start

    record = {
        "name": name,
        "variant": variant,
        "tokens": tokens,
        "hidden": hidden,
        "vocabulary": vocabulary,
        "input_bytes": sum(t.numel() * t.element_size() for t in inputs),
        "logits_bytes": tokens * vocabulary * 4,
    }
    record["memory_budget_bytes"] = cap_allocations()
    reset_peak_rss()
    baseline = current_rss_bytes()
    try:
        first = step()
    except RuntimeError as err:  # the allocation cap: this variant does not fit in the machine's memory
        if "can't allocate memory" not in str(err):
            raise
        emit({**record, "error": "out of memory", "peak_before_failure_bytes": peak_rss_bytes() - baseline})
        return
    record["extra_bytes"] = max(0, peak_rss_bytes() - baseline)
    times = [step() for _ in range(repeats)]
    record["seconds"] = statistics.median(times) if times else first
    record["cpu_seconds"] = statistics.median(cpu_seconds[1:] if times else cpu_seconds)
    record["timed_steps"] = len(times) or 1
    emit(record)


if __name__ == "__main__":
    main()
