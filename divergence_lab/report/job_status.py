"""How far a sweep has got: which jobs finished, run, failed or have not started yet.

Used by ``dlab-report`` on a sweep that is still running or that lost jobs: nothing is dropped silently.
A job whose ``status.json`` says ``running`` but whose process is gone (killed with SIGKILL, a node that
died: its pid is dead on this host, or its lock's heartbeat stopped, :mod:`divergence_lab.run.ownership`)
is shown as ``stale``.
The number of jobs a basic (grid) sweep will have is read from its ``multirun.yaml``: the product of the
sizes of its sweep overrides (command line and ``hydra.sweeper.params``). The grid sweeper writes that file
each time the sweep starts, so a sweep that grew (:mod:`divergence_lab.sweep.growth`) counts its grown grid.
Optuna studies add trials over several invocations, so no total is given for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from divergence_lab.ground.record_format import last_checkpoint_age_s, read_status, running_owner_gone

GRID_SWEEPER = "BasicSweeper"  # how the grid sweepers' class names end: Hydra's and the one that grows


UNFINISHED_STATES = ("starting", "running", "stale", "interrupted", "failed")  # a job without metrics.json


@dataclass
class UnfinishedJob:
    job_dir: Path
    state: str  # one of UNFINISHED_STATES
    detail: str

    def describe(self) -> str:
        return f"{self.job_dir.name} ({self.state}{': ' + self.detail if self.detail else ''})"


def unfinished_job(job_dir: Path) -> UnfinishedJob:
    """What a job without ``metrics.json`` is doing, from its ``status.json`` and last checkpoint."""
    status = read_status(job_dir)
    state = status.get("state", "starting")
    if state == "failed":
        return UnfinishedJob(job_dir, state, status.get("error", ""))
    if state == "interrupted":
        return UnfinishedJob(job_dir, state, f"{status.get('signal', '')} at {status.get('position', '?')}")
    parts = []
    if state == "running" and (gone := running_owner_gone(job_dir, status)) is not None:
        state = "stale"
        parts.append(gone)
    if status.get("slurm_job_id"):
        parts.append(f"SLURM job {status['slurm_job_id']}")
    if int(status.get("attempt", 1)) > 1:
        parts.append(f"attempt {status['attempt']}")
    age = last_checkpoint_age_s(job_dir)
    parts.append("no checkpoint yet" if age is None else f"last checkpoint {_duration(age)} ago")
    return UnfinishedJob(job_dir, state, ", ".join(parts))


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return time.strftime("%H:%M", time.gmtime(seconds)) + " h"


def sweep_size(sweep_dir: Path) -> int | None:
    """How many jobs the sweep has in all: a grid's size (:func:`expected_job_count`), an Optuna study's
    ``n_trials`` times its ``seeds_per_trial`` (read from ``multirun.yaml``), else None."""
    count = expected_job_count(sweep_dir)
    if count is not None:
        return count
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    sweeper = ((yaml.safe_load(path.read_text()) or {}).get("hydra", {}) or {}).get("sweeper") or {}
    trials, seeds = sweeper.get("n_trials"), sweeper.get("seeds_per_trial", 1)
    return trials * seeds if isinstance(trials, int) and isinstance(seeds, int) else None


def expected_job_count(sweep_dir: Path) -> int | None:
    """Jobs a grid sweep launches in all (None for other sweepers or without ``multirun.yaml``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra", {})
    sweeper = hydra.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith(GRID_SWEEPER):
        return None
    by_key = {str(key): f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()}
    for override in hydra.get("overrides", {}).get("task", []):
        by_key[override.split("=", 1)[0]] = override
    count = 1
    for override in OverridesParser.create().parse_overrides(list(by_key.values())):
        if override.is_sweep_override():
            count *= len(list(override.sweep_string_iterator()))
    return count
