"""The toy Hydra apps the Optuna tests sweep (``tests/apps``), run as a user would: ``python <app> -m ...``
into a sweep folder given by ``TOY_SWEEP_DIR``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APPS = Path(__file__).parents[1] / "apps"
OBJECTIVE = APPS / "objective.py"  # trials that fail on schedule
CURVE = APPS / "curve.py"  # a known per-epoch curve, reported to its trial
SWEEP_TIMEOUT_S = 240


def sweep_app(app: Path, sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``app`` swept into ``sweep_dir`` with ``args``, whatever its exit code."""
    env = {**os.environ, "TOY_SWEEP_DIR": str(sweep_dir)}
    return subprocess.run(
        [sys.executable, str(app), "-m", *args],
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
        env=env,
    )


def run_app(app: Path, sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """:func:`sweep_app`, which must succeed."""
    result = sweep_app(app, sweep_dir, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result
