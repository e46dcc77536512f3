"""Hydra callbacks around a sweep: how to resume it, how far it has got, its report when it ends, and how
to upload its offline W&B runs.

After each job, the job's process logs one line (console and the job's ``train.log``)::

    sweep kd_digits: 3/8 jobs ended, job 2 kd rkl seed 0 done, ~1m20s left

``3`` counts the jobs of the sweep folder that ended (finished or failed), whichever process ran them, so
the count holds for every launcher; ``8`` is the sweep's size (a grid's, or an Optuna study's
``n_trials``), and the time left is the finished jobs' mean wall time times the rounds of jobs still to
run, with as many side by side as the launcher runs at once.

Registered in ``conf/train.yaml`` under ``hydra.callbacks``; imported by every ``dlab`` process, so it
imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from divergence_lab.ground.progress import format_duration
from divergence_lab.ground.record_format import METRICS_FILE, STATUS_FILE, read_status
from divergence_lab.report.wandb_files import OFFLINE_RUN_DIRS
from divergence_lab.run.interruption import rerun_command
from divergence_lab.run.record import job_label

log = logging.getLogger(__name__)


def offline_wandb_runs(sweep_dir: Path) -> list[Path]:
    """The offline W&B run folders that the jobs of a sweep left behind."""
    return sorted(sweep_dir.glob(f"*/{OFFLINE_RUN_DIRS}"))


ENDED_STATES = ("finished", "failed")


def end_order(job_dir: Path) -> tuple[int, str] | None:
    """Where a job's end falls among the others': ``(when its record last changed, its folder name)``;
    ``status.json`` is written last whether it finished or failed (``metrics.json`` alone for a record
    without one). None for a job that has left no record."""
    times = [
        path.stat().st_mtime_ns for path in (job_dir / STATUS_FILE, job_dir / METRICS_FILE) if path.is_file()
    ]
    return (max(times), job_dir.name) if times else None


def ended_jobs(sweep_dir: Path, until: tuple[int, str] | None = None) -> tuple[int, list[float]]:
    """``(jobs of the sweep folder that ended, the wall times of those that finished)``, counting only the
    jobs whose end is not after ``until`` (an :func:`end_order`) when it is given: two parallel jobs that
    end at the same moment then count 1 and 2, not 2 and 2."""
    ended, wall_times = 0, []
    for job_dir in sweep_dir.iterdir() if sweep_dir.is_dir() else []:
        order = end_order(job_dir)
        if order is None or (until is not None and order > until):
            continue
        state = read_status(job_dir).get("state")
        ended += state in ENDED_STATES
        if state == "finished":
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                wall_times.append(float(json.loads((job_dir / METRICS_FILE).read_text())["wall_time_s"]))
    return ended, wall_times


def side_by_side(launcher: Any) -> int:
    """How many jobs the launcher runs at once: joblib's ``n_jobs``, submitit_local's cap, else 1."""
    if launcher is None:
        return 1
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, int):
        return max(1, os.cpu_count() or 1) if n_jobs < 0 else max(1, n_jobs)
    cap = launcher.get("max_parallel_jobs")
    return max(1, cap) if isinstance(cap, int) else 1


def job_folder(config: DictConfig) -> Path:
    """The job's own folder in the sweep: ``hydra.sweep.subdir`` (the job's number by default)."""
    sweep = config.hydra.sweep
    return Path(sweep.dir) / str(sweep.get("subdir", config.hydra.job.get("num")))


def job_end_line(config: DictConfig, failed: bool) -> str:
    """``sweep <name>: k/N jobs ended, <label> done, ~<time> left`` for the job that just ended."""
    from divergence_lab.report.job_status import sweep_size

    sweep_dir = Path(config.hydra.sweep.dir)
    ended, wall_times = ended_jobs(sweep_dir, until=end_order(job_folder(config)))
    size = sweep_size(sweep_dir)
    label = job_label(config, config.hydra.job.get("num"))
    counted = f"{ended}/{size}" if size is not None else str(ended)
    name = config.get("study_name") or sweep_dir.name
    line = f"sweep {name}: {counted} jobs ended, {label} {'failed' if failed else 'done'}"
    if size is not None and wall_times and size > ended:
        rounds = math.ceil((size - ended) / side_by_side(config.hydra.get("launcher")))
        line += f", ~{format_duration(rounds * sum(wall_times) / len(wall_times))} left"
    return line


class SweepNotices(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Own the sweep folder (when ``dlab`` could not name it before Hydra), say how to resume."""
        from divergence_lab.run.ownership import FolderInUse, acquire, is_owner_process, owns

        folder = Path(config.hydra.sweep.dir)
        if is_owner_process() and not owns(folder):  # ``dlab`` owns it already unless Hydra named it
            try:
                acquire(folder)
            except FolderInUse as error:
                print(f"dlab: error: {error}", file=sys.stderr)
                sys.exit(2)
        # finished jobs are skipped when the same sweep is rerun into its folder
        command = rerun_command(sys.argv[1:], "hydra.sweep.dir", config.hydra.sweep.dir)
        log.info("If this sweep stops, resume it with: %s", command)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """In the job's process: log ``sweep <name>: k/N jobs ended, <label> done, ~<time> left``."""
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            line = job_end_line(config, job_return.status == JobStatus.FAILED)
        except (OSError, ValueError, KeyError, AttributeError) as error:  # a progress line never fails a job
            log.debug("no progress line: %s", error)
            return
        log.info(line)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from divergence_lab.report.command import report_at_sweep_end

        log.info(report_at_sweep_end(Path(config.hydra.sweep.dir)))
        runs = offline_wandb_runs(Path(config.hydra.sweep.dir))
        if runs:
            log.info(
                "%d offline W&B run(s). Upload them with: wandb sync %s",
                len(runs),
                shlex.quote(str(Path(config.hydra.sweep.dir))) + f"/*/{OFFLINE_RUN_DIRS}",
            )
