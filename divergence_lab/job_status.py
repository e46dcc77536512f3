"""Where a job stands, readable from its run directory while a sweep is still going.

``status.json`` holds one of ``running`` (written when an attempt starts, with host, pid, SLURM job id and
attempt), ``finished`` (after ``metrics.json`` was written), ``failed`` (with the error) or ``interrupted``
(SIGINT / SIGTERM, with the signal and where the run was). ``metrics.json`` alone also means finished (see
:mod:`divergence_lab.run_dir`). A job killed outright (SIGKILL, node failure) stays ``running`` in this
file; the report then shows when its last checkpoint was written, which tells a stalled job from a live one.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from divergence_lab.run_dir import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    METRICS_FILE,
    is_global_rank_zero,
    write_json_atomically,
)

STATUS_FILE = "status.json"


def mark_running(run_dir: Path) -> None:
    """Record that an attempt of this job started here (attempts count requeues and reruns)."""
    if not is_global_rank_zero():
        return
    previous = read_status(run_dir)
    write_json_atomically(
        run_dir / STATUS_FILE,
        {
            "state": "running",
            "attempt": int(previous.get("attempt", 0)) + 1,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID")),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )


def _update(run_dir: Path, state: str, **details: Any) -> None:
    """Set ``state`` (and details) in status.json, keeping what the attempt recorded when it started."""
    if not is_global_rank_zero():
        return
    try:
        status = json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        status = {}
    status.update(state=state, **details)
    status[f"{state}_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write_json_atomically(run_dir / STATUS_FILE, status)


def mark_failed(run_dir: Path, error: BaseException) -> None:
    _update(run_dir, "failed", error=f"{type(error).__name__}: {error}")


def mark_interrupted(run_dir: Path, signal_name: str, position: str) -> None:
    _update(run_dir, "interrupted", signal=signal_name, position=position)


def mark_finished(run_dir: Path) -> None:
    _update(run_dir, "finished")


def read_status(run_dir: Path) -> dict[str, Any]:
    """``finished`` when metrics.json exists, else what status.json says (``starting`` before it exists)."""
    if (run_dir / METRICS_FILE).is_file():
        return {"state": "finished"}
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {"state": "starting"}


def last_checkpoint_age_s(run_dir: Path) -> float | None:
    """Seconds since the job last wrote ``last.ckpt`` (None when it never did)."""
    path = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    return time.time() - path.stat().st_mtime if path.is_file() else None
