"""The cluster path on a real SLURM (``make slurm-up``): job arrays, preemption + requeue, DDP, Optuna.

Skipped with the reason when no SLURM controller answers; with ``DLAB_REQUIRE_SLURM=1`` (CI) it fails
instead. Every test submits real jobs through hydra-submitit-launcher and checks them with ``sacct``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from divergence_lab.report.wandb_files import offline_run_files, read_offline_run

BIN = Path(sys.executable).parent
TINY = ["trainer.max_epochs=2", "method.teacher.max_epochs=2"]
# long enough (about 15 s of training) to be preempted in the middle
LONG = ["trainer.max_epochs=60", "data.batch_size=16", "method.teacher.max_epochs=2"]

pytestmark = pytest.mark.slurm


def slurm_unavailable_reason() -> str | None:
    """Why the SLURM tier cannot run here, or None when a controller, an idle node and sacct answer."""
    if shutil.which("sbatch") is None:
        return "no SLURM client on PATH; start a single-node cluster with `make slurm-up` (needs root)"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    if "UP" not in ping.stdout:
        return f"no SLURM controller answers `scontrol ping` ({ping.stdout.strip() or ping.stderr.strip()})"
    states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30).stdout
    if not {"idle", "mix", "alloc"} & set(states.split()):
        return f"no SLURM node is up (sinfo states: {states.split()})"
    if subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=30).returncode != 0:
        return "sacct fails: SLURM accounting (slurmdbd) is not running, and submitit needs it"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> None:
    reason = slurm_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("DLAB_REQUIRE_SLURM") == "1":
        pytest.fail(f"DLAB_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The jobs' environment (sbatch exports it): one teacher cache for the module, W&B offline."""
    cache = tmp_path_factory.mktemp("teachers")
    return {**os.environ, "DLAB_TEACHER_CACHE": str(cache), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def dlab(args: list[str], root: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [BIN / "dlab", *args, f"paths.output_root={root}"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def only_sweep(root: Path, study: str) -> Path:
    (sweep,) = (root / "sweeps" / study).iterdir()
    return sweep


def submitted_job_ids(sweep: Path) -> set[str]:
    """The SLURM job ids of a sweep's jobs, from submitit's folders (``<array id>_<index>`` in an array)."""
    return {p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()}


def sacct(job: str, *fields: str, steps: bool = False) -> list[list[str]]:
    args = ["sacct", "-n", "-P", "-j", job, "-o", ",".join(fields)]
    if not steps:
        args.append("-X")
    for _ in range(40):  # the accounting database lags the controller by a moment
        out = subprocess.run(args + ["-D"], capture_output=True, text=True, timeout=30, check=True).stdout
        rows = [line.split("|") for line in out.splitlines() if line]
        if rows and all(row[-1] not in ("RUNNING", "PENDING", "") for row in rows if "State" in fields):
            return rows
        time.sleep(0.5)
    return rows


def test_sweep_runs_as_one_job_array_and_reports_like_a_local_run(tmp_path, env):
    grid = ["divergence=kl,rkl,js", "seed=0", *TINY]
    dlab(["-m", "hydra/launcher=slurm_cpu", *grid], tmp_path / "slurm", env)
    sweep = only_sweep(tmp_path / "slurm", "kd_digits")
    jobs = {job for job in submitted_job_ids(sweep) if "_" in job}  # array tasks: <array id>_<index>
    array_ids = {job.split("_")[0] for job in jobs}
    assert len(jobs) == 3 and len(array_ids) == 1  # one array of three
    rows = sacct(array_ids.pop(), "JobID", "State")
    assert sorted(rows) == sorted([[job, "COMPLETED"] for job in jobs])
    for num in range(3):
        assert (sweep / str(num) / "metrics.json").is_file()

    # slurm_cpu jobs get one CPU (threads=auto: 1); the thread count moves float sums in the last bit
    dlab(["-m", *grid, "threads=1"], tmp_path / "local", env)
    local = only_sweep(tmp_path / "local", "kd_digits")
    for folder in (sweep, local):
        subprocess.run([BIN / "dlab-report", str(folder)], check=True, capture_output=True, timeout=120)
    assert (sweep / "report.csv").read_text() == (local / "report.csv").read_text()


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_preempted_job_is_requeued_and_resumes_to_the_same_result_and_wandb_run(tmp_path, env):
    """USR2 (what SLURM sends on preemption/before the time limit) mid-training: requeue, resume, same end."""
    args = ["-m", "hydra/launcher=slurm_cpu", "logger=wandb", *LONG]
    roots = {name: tmp_path / name for name in ("preempted", "straight")}
    procs = {}
    for name, root in roots.items():
        root.mkdir()
        procs[name] = subprocess.Popen(
            [BIN / "dlab", *args, f"paths.output_root={root}"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    first_epoch = lambda: list(roots["preempted"].glob("sweeps/*/*/0/checkpoints/last.ckpt"))  # noqa: E731
    _wait_for(first_epoch, 240, "a first epoch")
    run_dir = next(roots["preempted"].glob("sweeps/*/*/0"))
    job = json.loads((run_dir / "status.json").read_text())["slurm_job_id"]
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, f"{name}: {out[-4000:]}"

    assert "REQUEUED" in {row[1] for row in sacct(job, "JobID", "State")}
    status = json.loads((run_dir / "status.json").read_text())
    assert status["attempt"] == 2  # the same job, started again in its own run directory
    straight_dir = next(roots["straight"].glob("sweeps/*/*/0"))
    resumed = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    uninterrupted = json.loads((straight_dir / "metrics.json").read_text())["metrics"]
    assert resumed == uninterrupted  # bit for bit
    # the resumed attempt kept logging into the same W&B run
    assert (run_dir / "wandb_id.txt").read_text().strip() == run_id
    runs = [read_offline_run(path) for path in offline_run_files(run_dir)]
    assert len(runs) == 2  # one offline file per attempt, both under the run's id
    assert all(path.name == f"run-{run_id}.wandb" for path in offline_run_files(run_dir))
    # SLURM stops W&B's service with the job, so the first attempt's file may stop short of its records
    assert {run.run_id for run in runs} - {""} == {run_id}
    assert runs[-1].run_id == run_id and runs[-1].summary["test/acc"] == pytest.approx(resumed["test/acc"])
    assert (run_dir / "csv" / "metrics.attempt-0.csv").is_file()  # the first attempt's curves are kept


def test_ddp_job_runs_across_two_slurm_tasks(tmp_path, env):
    dlab(
        ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.tasks_per_node=2", "trainer=ddp", *TINY],
        tmp_path,
        env,
    )
    sweep = only_sweep(tmp_path, "kd_digits")
    record = json.loads((sweep / "0" / "metrics.json").read_text())
    assert 0.0 < record["metrics"]["test/acc"] <= 1.0
    (job,) = submitted_job_ids(sweep)  # a one-job sweep is a plain job, not an array
    steps = sacct(job, "JobID", "NTasks", steps=True)
    assert [ntasks for job_id, ntasks in steps if job_id.endswith(".0")] == ["2"]  # one step, two tasks
    logs = "".join(p.read_text() for p in (sweep / ".submitit" / job).glob("*_log.out"))
    assert "global_rank=0(2)" in logs and "global_rank=1(2)" in logs


def test_optuna_study_with_the_slurm_launcher(tmp_path, env):
    dlab(
        [
            "-m",
            "hparams_search=kd_optuna",
            "hydra/launcher=slurm_cpu",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "trainer.max_epochs=1",
            "method.teacher.max_epochs=2",
        ],
        tmp_path,
        env,
    )
    sweep = tmp_path / "sweeps" / "kd_optuna" / "optuna"
    study = optuna.load_study(study_name="kd_optuna", storage=f"sqlite:///{sweep}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    tasks = {job for job in submitted_job_ids(sweep) if "_" in job}
    assert len(tasks) == 2 and len({job.split("_")[0] for job in tasks}) == 1  # both trials in one array
    assert (sweep / "best.yaml").is_file()
