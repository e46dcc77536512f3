"""A local sweep stopped with ``kill <parent pid>`` stops all its processes and reruns to the numbers of a
sweep that was never stopped; a job killed outright is reported ``stale``, not ``running``.

Every launcher that runs jobs on this machine is checked: ``basic`` (the jobs run in the parent, one after
the other), ``joblib`` (loky worker processes) and ``submitit_local`` (a controller process per job). The
signal goes to the parent only, as a user's ``kill`` does; the parent must pass it on.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from divergence_lab.report.job_status import unfinished_job
from divergence_lab.run.interruption import descendants
from tests.faults.test_fault_injection import results

BIN = Path(sys.executable).parent
# a job stopped after its first epoch still has ~2.5 s of training left (epochs of ~0.09 s on one thread):
# room for the poll, the process walk and the signal; short enough for a quick rerun
EPOCHS = 30
SEEDS = "0,1"
JOBS = 2
COMMON = ["-m", "method=teacher", f"trainer.max_epochs={EPOCHS}", f"seed={SEEDS}", "threads=1"]
LAUNCHERS = {
    "basic": [],
    "joblib": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={JOBS}"],
    "submitit_local": ["hydra/launcher=submitit_local", f"hydra.launcher.max_parallel_jobs={JOBS}"],
}
WAIT_S = 240  # the longest a sweep of the tiny jobs may take on a loaded machine
POLL_S = 0.2
SURVIVOR_WAIT_S = 5.0  # processes of the stopped sweep must be gone within this
SHUTDOWN_LIMIT_S = 20.0  # the parent must have exited within this after the signal


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "DLAB_OUTPUT_ROOT": str(tmp_path / "outputs")}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    """``dlab args`` started in ``tmp_path``, its output captured as text."""
    return subprocess.Popen(
        [str(BIN / "dlab"), *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _dlab(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "dlab"), *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


def _metrics(sweep_dir: Path) -> dict[str, dict]:
    return {
        job.name: results(json.loads((job / "metrics.json").read_text())["metrics"])
        for job in sorted(sweep_dir.iterdir())
        if (job / "metrics.json").is_file()
    }


def _statuses(sweep_dir: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(sweep_dir.glob("*/status.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except ValueError:
            continue  # being replaced this very moment
    return found


def _wait_for(condition, what: str, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"dlab ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_S)


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    """The numbers of the same sweep never stopped (sequential; one thread per job, as in every case)."""
    root = tmp_path_factory.mktemp("reference")
    done = _dlab([*COMMON, f"hydra.sweep.dir={root / 'sweep'}"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _metrics(root / "sweep")
    assert len(metrics) == JOBS
    return metrics


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_stopped_sweep_stops_its_processes_and_reruns_to_the_same_numbers(launcher, reference, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [*COMMON, *LAUNCHERS[launcher], f"hydra.sweep.dir={sweep_dir}"]
    parent = _start(args, tmp_path)
    try:
        # stop once a job has trained an epoch (its last.ckpt exists), so the rerun resumes it
        _wait_for(
            lambda: any(
                status.get("state") == "running" and (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()
                for job, status in _statuses(sweep_dir).items()
            ),
            "a job with a checkpoint",
            parent,
        )
        processes = descendants(parent.pid)
        workers = {
            status["pid"] for status in _statuses(sweep_dir).values() if status.get("state") == "running"
        }
        stopped_at = time.monotonic()
        parent.send_signal(signal.SIGTERM)
        out, err = parent.communicate(timeout=WAIT_S)
        shutdown_s = time.monotonic() - stopped_at
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert shutdown_s < SHUTDOWN_LIMIT_S, shutdown_s
    assert "Traceback" not in out + err, err[-3000:]
    deadline = time.monotonic() + SURVIVOR_WAIT_S
    while time.monotonic() < deadline and any(_alive(pid) for pid in [*processes, *workers]):
        time.sleep(POLL_S)
    assert not [pid for pid in [*processes, *workers] if _alive(pid)], "processes of the sweep survived"

    statuses = _statuses(sweep_dir)
    assert statuses and all(s["state"] in ("interrupted", "finished") for s in statuses.values()), statuses
    assert any(s["state"] == "interrupted" and s["signal"] == "SIGTERM" for s in statuses.values())
    if launcher == "basic":  # one job at a time: the queued job never started
        assert len(statuses) == 1, statuses
    # the parent's last line: the job's own in the sequential launcher, the sweep's in the others
    line = [line for line in err.splitlines() if line.strip()][-1]
    stopped = "dlab: interrupted at " if launcher == "basic" else "dlab: sweep stopped by SIGTERM"
    assert line.startswith(stopped), err[-3000:]
    rerun = shlex.split(line.split("; rerun: ", 1)[1])
    assert rerun[0] == "dlab" and f"hydra.sweep.dir={sweep_dir}" in rerun

    again = _dlab(rerun[1:], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _metrics(sweep_dir) == reference
    assert not (sweep_dir / ".dlab.lock").exists()


def test_a_killed_job_is_reported_stale(tmp_path):
    """SIGKILL leaves ``status.json`` at running; the report says the job is stale (its process is gone)."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "method=teacher", "trainer.max_epochs=3", f"seed={SEEDS}", f"hydra.sweep.dir={sweep_dir}"]
    assert _dlab(args, tmp_path).returncode == 0
    for path in ("metrics.json", "checkpoints"):  # job 1 starts over; job 0 stays finished
        target = sweep_dir / "1" / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    killed = subprocess.run(
        [sys.executable, "-m", "tests.faults.driver", "fit", "SIGKILL", *args],
        cwd=Path(__file__).parents[2],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert json.loads((sweep_dir / "1" / "status.json").read_text())["state"] == "running"

    job = unfinished_job(sweep_dir / "1")  # what the report lists for an unfinished job
    assert job.state == "stale" and job.describe().startswith("1 (stale: pid "), job.describe()
    assert "is gone" in job.describe()
