"""Timing and memory helpers shared by the benchmark cases (each case runs in its own process)."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def median_time(work: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``work()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def emit(record: dict[str, Any]) -> None:
    """The one line a case prints: a JSON record the runner parses."""
    sys.stdout.write("RESULT " + json.dumps(record) + "\n")
