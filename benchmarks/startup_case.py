"""Start-up cost: ``dlab --help`` and one complete one-epoch run, as a user starts them (new processes).

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


def wall(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        command, check=True, capture_output=True, cwd=cwd, env={**os.environ, "DLAB_OUTPUT_ROOT": cwd}
    )
    return time.perf_counter() - start


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as folder:
        help_s = statistics.median(wall([DLAB, "--help"], folder) for _ in range(repeats))
        run = [DLAB, "trainer.max_epochs=1", "method.teacher.max_epochs=1"]
        wall(run, folder)  # trains and caches the teacher
        run_s = statistics.median(wall(run, folder) for _ in range(repeats))
    emit({"help_seconds": help_s, "one_epoch_run_seconds": run_s})


if __name__ == "__main__":
    main()
