"""Thread hygiene: each training process uses as many intra-op threads as it has CPUs to itself.

PyTorch starts one thread per core it sees. Two processes on two cores then run four busy threads that
preempt each other (BENCHMARKS.md, "Thread hygiene", measures two CTS runs side by side).
``threads: auto`` (the default) computes

    threads = max(1, usable CPUs // jobs running side by side on them)

where the usable CPUs are this process's CPU affinity, capped by ``SLURM_CPUS_PER_TASK`` inside a SLURM job,
and the jobs side by side are the local launcher's parallel workers (joblib ``n_jobs``, submitit_local
``max_parallel_jobs``) or the processes of a CPU DDP run (``trainer.devices``). ``threads: <n>`` sets it.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by SLURM's per-task allocation."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cpus, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cpus


def jobs_side_by_side(cfg: DictConfig, launcher: Any, cpus: int) -> int:
    """How many processes share the usable CPUs: local parallel workers times CPU DDP processes."""
    workers = 1
    target = str(OmegaConf.select(launcher, "_target_", default="")) if launcher is not None else ""
    if "Joblib" in target:
        n_jobs = int(launcher.get("n_jobs", 1))
        workers = cpus if n_jobs < 0 else n_jobs
    elif "LocalLauncher" in target:
        workers = int(launcher.get("max_parallel_jobs", 1))
    trainer = cfg.trainer
    ddp_processes = 1
    if str(trainer.get("strategy", "")).startswith("ddp") and trainer.get("accelerator") == "cpu":
        devices = trainer.get("devices", 1)
        ddp_processes = devices if isinstance(devices, int) and devices > 0 else 1
    return max(1, workers * ddp_processes)


def thread_count(cfg: DictConfig, launcher: Any) -> tuple[int, str]:
    """The intra-op thread count for this run and a short reason for the log."""
    setting = cfg.get("threads", "auto")
    if setting != "auto":
        return int(setting), "threads setting"
    cpus = usable_cpus()
    jobs = jobs_side_by_side(cfg, launcher, cpus)
    return max(1, cpus // jobs), f"{cpus} usable CPU(s) / {jobs} job(s) side by side"


def apply_threads(cfg: DictConfig, launcher: Any) -> str:
    """Set torch's intra-op threads for this process; return the line to log."""
    import torch

    count, reason = thread_count(cfg, launcher)
    torch.set_num_threads(count)
    return f"threads: {count} ({reason})"
