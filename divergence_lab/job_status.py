"""Where a job stands, readable from its run directory while a sweep is still going.

``status.json`` is written when a job starts (``running``, with host, pid, SLURM job id and attempt) and when
it fails (``failed``, with the error). A finished job is marked by ``metrics.json`` itself (see
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


def mark_failed(run_dir: Path, error: BaseException) -> None:
    if not is_global_rank_zero():
        return
    status = read_status(run_dir)
    status.update(
        state="failed",
        error=f"{type(error).__name__}: {error}",
        failed_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    write_json_atomically(run_dir / STATUS_FILE, status)


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
