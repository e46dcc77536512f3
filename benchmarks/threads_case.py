"""Thread hygiene: two CTS runs side by side on the same CPUs, with and without one thread per process.

python -m benchmarks.threads_case [repeats]

Both variants are one user command, ``dlab -m hydra/launcher=joblib hydra.launcher.n_jobs=2
experiment=cts_digits seed=0,1``: two worker processes start together. *Oversubscribed* adds
``threads=<all usable CPUs>`` (what torch does by itself: every process starts one thread per core);
*hygiene* keeps the default ``threads=auto`` (usable CPUs / 2 workers). A third row is one run alone with
all CPUs, the floor. Reported: the CTS search time of each job (``test/search_time_s``), its wall time, and
the whole sweep's wall time; medians over repeats. The teacher-free CTS preset needs no cache.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import emit
from divergence_lab.run.threads import usable_cpus

DLAB = str(Path(sys.executable).parent / "dlab")
CTS = ["experiment=cts_digits", "trainer.max_epochs=5"]
SIDE_BY_SIDE = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1"]


def sweep(args: list[str], root: Path) -> dict[str, float]:
    """Run one ``dlab`` command; return the median job search/wall time and the command's wall time."""
    start = time.perf_counter()
    subprocess.run(
        [DLAB, *args, f"paths.output_root={root}"],
        check=True,
        capture_output=True,
        cwd=root,
        env={**os.environ, "OMP_NUM_THREADS": ""},
    )
    wall = time.perf_counter() - start
    records = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
    return {
        "search_s": statistics.median(r["metrics"]["test/search_time_s"] for r in records),
        "job_wall_s": statistics.median(r["wall_time_s"] for r in records),
        "command_wall_s": wall,
        "jobs": len(records),
    }


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    cpus = usable_cpus()
    variants = {
        "alone": [*CTS, f"threads={cpus}"],
        "oversubscribed": [*SIDE_BY_SIDE, *CTS, f"threads={cpus}"],
        "hygiene": [*SIDE_BY_SIDE, *CTS],
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for name, args in variants.items():  # interleaved, so drift hits every variant alike
                root = Path(tmp, f"{name}-{repeat}")
                root.mkdir()
                results[name].append(sweep(args, root))
    emit(
        {
            "cpus": cpus,
            "repeats": repeats,
            **{
                name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                for name, runs in results.items()
            },
        }
    )


if __name__ == "__main__":
    main()
