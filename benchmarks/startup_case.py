"""Start-up cost: ``dlab --help``, two refused configs (an unknown option, a value out of range) and one
complete one-epoch run, as a user starts them (new processes).

python -m benchmarks.startup_case [repeats]
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


CONFIG_ERRORS = {"unknown option": "divergence=nosuch", "value out of range": "method.alpha=7"}
USAGE_ERROR = 2  # dlab's exit status for a refused config


def wall(command: list[str], cwd: str, status: int = 0) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, cwd=cwd, env={**os.environ, "DLAB_OUTPUT_ROOT": cwd}
    )
    elapsed = time.perf_counter() - start
    if result.returncode != status:
        raise SystemExit(f"{' '.join(command)} exited with {result.returncode}, expected {status}")
    return elapsed


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as folder:
        help_s = statistics.median(wall([DLAB, "--help"], folder) for _ in range(repeats))
        errors = {
            what: statistics.median(wall([DLAB, override], folder, USAGE_ERROR) for _ in range(repeats))
            for what, override in CONFIG_ERRORS.items()
        }
        run = [DLAB, "trainer.max_epochs=1", "method.teacher.max_epochs=1"]
        wall(run, folder)  # trains and caches the teacher
        run_s = statistics.median(wall(run, folder) for _ in range(repeats))
    emit({"help_seconds": help_s, "config_error_seconds": errors, "one_epoch_run_seconds": run_s})


if __name__ == "__main__":
    main()
