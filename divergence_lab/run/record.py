"""The run record: what ``metrics.json`` and ``status.json`` hold, written by a run and read by reports.

``metrics.json`` is written last, atomically: its presence means the run finished. It holds
``{"metrics": {...}, "method", "divergence", "data", "study", "seed", "wall_time_s", "threads", "git",
"versions", "finished_at"}`` and what the test metrics were measured on:

* ``selected_epoch``: the tested epoch, counted from 1 (epoch ``e`` = the state after ``e`` epochs of
  training, as the progress lines, W&B and the report count), and ``checkpoint_selection``: the rule that
  chose it (``best val/acc, ties by lowest val/nll``; ``last epoch ...`` for methods that test their last
  epoch);
* ``n_train``, ``n_val``, ``n_test``: the number of examples in each split of the data module;
* ``per_class_acc`` (classifiers): the tested network's accuracy on the test examples of each class, by
  class index, ``null`` for a class without test examples; ``confusion.json`` beside it holds the counts
  (:mod:`divergence_lab.metrics.per_class`) when the data have at most ``method.confusion_max_classes``;
* ``pruned`` (a job of an Optuna trial that its pruner stopped, :mod:`divergence_lab.run.trial_reports`):
  ``{"at_epoch": e}``, the epoch after which training stopped.

``status.json`` holds one of ``running`` (written when an attempt starts, with host, pid, SLURM job id and
attempt), ``finished`` (after ``metrics.json`` was written), ``failed`` (with the error) or ``interrupted``
(SIGINT / SIGTERM, with the signal and where the run was). A job killed outright (SIGKILL, node failure)
stays ``running`` in this file; :func:`~divergence_lab.ground.record_format.running_owner_gone` tells such a
job from a live one (the owner's lock record and its heartbeat, :mod:`divergence_lab.ground.lock_record`,
else the recorded pid on this host), and the report shows it as *stale*, with when its last checkpoint was
written.

This module writes the record; the file names and the readers are the run-record format,
:mod:`divergence_lab.ground.record_format`, which the report reads without importing the run layer.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from divergence_lab.ground.record_format import METRICS_FILE, STATUS_FILE, read_status
from divergence_lab.run.ranks import is_global_rank_zero


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


def job_label(cfg: DictConfig, job_num: Any = None) -> str:
    """How a sweep's lines name a job: ``job 3 kd kl seed 1`` (method, divergence, seed)."""
    parts = [f"job {job_num}" if job_num is not None else None, cfg.method.name, divergence_label(cfg)]
    return " ".join(str(part) for part in [*parts, f"seed {cfg.seed}"] if part)


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


def git_commit(path: Path = Path(__file__).parent) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree the code runs from."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": bool(status.strip())}


def divergence_label(cfg: DictConfig) -> str | None:
    """The divergence a run is labelled by, or None for methods that use none (``method=teacher``)."""
    return cfg.divergence.name if cfg.method.get("uses_divergence", True) else None


def write_metrics(
    run_dir: Path,
    cfg: DictConfig,
    metrics: dict[str, float],
    started: float,
    tested: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json`` (atomically) and return its content; ``tested`` holds the top-level entries
    that describe what was tested (``selected_epoch``, ``checkpoint_selection``, ``n_train`` ...)."""
    import lightning
    import torch

    record = {
        "metrics": {name: float(value) for name, value in sorted(metrics.items())},
        "method": cfg.method.name,
        "divergence": divergence_label(cfg),
        "data": cfg.data.name,
        "study": cfg.study_name,
        "seed": cfg.seed,
        **dict(tested or {}),
        "wall_time_s": round(time.time() - started, 3),
        "threads": torch.get_num_threads(),  # the last bits of float sums depend on it
        "git": git_commit(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            # torch's vector capability here (AVX2, AVX512, ...); the row kernels are built for AVX2 on both
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomically(run_dir / METRICS_FILE, record)
    return record


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def torch_save_atomically(content: Any, path: Path) -> None:
    """``torch.save`` so that readers see the old file or the new one, never half of one."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(content, tmp)
    os.replace(tmp, path)
