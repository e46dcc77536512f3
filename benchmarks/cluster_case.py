"""Cluster overhead: SLURM submit-to-result latency, and one 6-job sweep through each launcher.

python -m benchmarks.cluster_case [repeats]

Needs a SLURM controller (``make slurm-up``). Every sweep is a user's ``dlab -m`` command in a new process,
with the teacher already cached, so the numbers compare launchers, not teacher training.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.measure import emit

DLAB = str(Path(sys.executable).parent / "dlab")
SIX_JOBS = ["divergence=kl,rkl,js", "seed=0,1", "trainer.max_epochs=2", "method.teacher.max_epochs=2"]
TEACHERS = Path(tempfile.gettempdir(), "dlab-bench-teachers")
LAUNCHERS = {"local": [], "joblib": ["hydra/launcher=joblib"], "slurm": ["hydra/launcher=slurm_cpu"]}


def add(a: int, b: int) -> int:
    return a + b


def submit_to_result_seconds(folder: str) -> float:
    """A trivial function through submitit on SLURM: sbatch, scheduling, start, result pickle, sacct poll."""
    import submitit

    executor = submitit.AutoExecutor(folder=f"{folder}/submitit", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_cpus_per_task=1, slurm_mem_gb=1)
    start = time.perf_counter()
    assert executor.submit(add, 1, 2).result() == 3
    return time.perf_counter() - start


def sweep_seconds(args: list[str], root: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [DLAB, "-m", *args, f"paths.output_root={root}"],
        check=True,
        capture_output=True,
        cwd=root,
        env={**os.environ, "DLAB_TEACHER_CACHE": str(TEACHERS)},
    )
    return time.perf_counter() - start


def median_sweep_seconds(args: list[str], root: Path, repeats: int) -> float:
    times = []
    for repeat in range(repeats):
        run_root = root / str(repeat)
        run_root.mkdir(parents=True)
        times.append(sweep_seconds(args, str(run_root)))
    return statistics.median(times)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as folder:
        latency = statistics.median(submit_to_result_seconds(folder) for _ in range(repeats))
        warm = Path(folder, "warm")
        warm.mkdir()
        sweep_seconds(["trainer.max_epochs=1", "method.teacher.max_epochs=2"], str(warm))  # teacher
        one_job = {
            name: median_sweep_seconds(
                [*LAUNCHERS[name], "trainer.max_epochs=2"], Path(folder, f"one-{name}"), repeats
            )
            for name in ("local", "slurm")
        }
        six_jobs = {
            name: median_sweep_seconds([*launcher, *SIX_JOBS], Path(folder, f"six-{name}"), repeats)
            for name, launcher in LAUNCHERS.items()
        }
    emit({"submit_to_result_s": latency, "one_job_s": one_job, "six_jobs_s": six_jobs})


if __name__ == "__main__":
    main()
