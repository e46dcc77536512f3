"""A sweep's output can be followed: every line a job logs carries the job's label (parallel jobs
interleave), each job's end says ``k/N jobs ended``, and testing says what it tests; the job's log has it all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
JOBS = 2
EPOCHS = 2
WAIT_S = 300  # the longest the tiny sweep may take on a loaded machine
LABEL = re.compile(r"^\[job (\d) teacher seed (\d)\] ")


def test_a_parallel_sweeps_lines_name_their_job_and_count_the_jobs_done(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(
        [str(BIN / "dlab"), "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={JOBS}", "method=teacher"]
        + [f"trainer.max_epochs={EPOCHS}", "seed=0,1", "study_name=progress", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        env={**os.environ, "DLAB_OUTPUT_ROOT": str(tmp_path / "outputs")},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).splitlines()

    epoch_lines = [line for line in lines if "[train] epoch " in line]
    assert len(epoch_lines) == JOBS * EPOCHS
    for line in epoch_lines:  # job k trains seed k here
        label = LABEL.match(line)
        assert label is not None and label.group(1) == label.group(2), line
    end = re.compile(r"sweep progress: \d/2 jobs ended, job \d teacher seed \d done")
    ends = [line for line in lines if end.search(line)]
    assert sorted(re.search(r"(\d)/2 jobs", line).group(1) for line in ends) == ["1", "2"], ends
    first = next(line for line in ends if "1/2 jobs" in line)
    assert re.search(r"~[\d.]+s left$", first), first  # an estimate while a job is still to end

    for job in ("0", "1"):
        log = (sweep_dir / job / "train.log").read_text().splitlines()
        assert any(LABEL.match(line) and "[train] epoch 2/2" in line for line in log)
        assert any(f"testing the selected checkpoint (epoch {EPOCHS}) on " in line for line in log)
        assert any("sweep progress: " in line and " jobs ended, job " in line for line in log)


def _sweep_folder(tmp_path: Path, sweeper: str, finished: int) -> Path:
    import json

    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    overrides = "  overrides:\n    task:\n    - seed=0,1,2,3\n"
    (sweep_dir / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n{sweeper}{overrides}")
    for job in range(finished):
        (sweep_dir / str(job)).mkdir()
        (sweep_dir / str(job) / "metrics.json").write_text(json.dumps({"metrics": {}, "wall_time_s": 60.0}))
    return sweep_dir


def _job_config(sweep_dir: Path, launcher: dict) -> object:
    from omegaconf import OmegaConf

    return OmegaConf.create(
        {
            "study_name": "study",
            "seed": 1,
            "method": {"name": "kd"},
            "divergence": {"name": "kl"},
            "hydra": {"sweep": {"dir": str(sweep_dir)}, "job": {"num": 1}, "launcher": launcher},
        }
    )


def test_the_time_left_counts_the_jobs_still_to_run_and_how_many_run_at_once(tmp_path):
    from divergence_lab.sweep.callbacks import job_end_line

    grid = "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
    sweep_dir = _sweep_folder(tmp_path, grid, finished=1)
    line = job_end_line(_job_config(sweep_dir, {"n_jobs": 3}), failed=False)
    assert line == "sweep study: 1/4 jobs ended, job 1 kd kl seed 1 done, ~1m00s left"  # 3 left, 3 at once
    assert job_end_line(_job_config(sweep_dir, {}), failed=False).endswith("~3m00s left")  # one at a time


def test_an_optuna_study_counts_its_trials(tmp_path):
    from divergence_lab.sweep.callbacks import job_end_line

    optuna = "    _target_: x.ResumableOptunaSweeper\n    n_trials: 10\n"
    sweep_dir = _sweep_folder(tmp_path, optuna, finished=2)
    line = job_end_line(_job_config(sweep_dir, {}), failed=True)
    assert line == "sweep study: 2/10 jobs ended, job 1 kd kl seed 1 failed, ~8m00s left"


def test_two_jobs_that_end_at_the_same_moment_count_one_and_two(tmp_path):
    """Each job counts the jobs that ended before it (by when their records last changed), so two parallel
    jobs that both find the other's record count 1/2 and 2/2, not 2/2 twice."""
    import json

    from divergence_lab.ground.record_format import METRICS_FILE, STATUS_FILE
    from divergence_lab.sweep.callbacks import job_end_line

    grid = "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
    sweep_dir = _sweep_folder(tmp_path, grid, finished=0)
    ended_at = 1_800_000_000_000_000_000  # ns; job 1 ended one microsecond after job 0
    for job, offset in ((0, 0), (1, 1_000)):
        (sweep_dir / str(job)).mkdir()
        (sweep_dir / str(job) / METRICS_FILE).write_text(json.dumps({"metrics": {}, "wall_time_s": 60.0}))
        status = sweep_dir / str(job) / STATUS_FILE
        status.write_text(json.dumps({"state": "finished"}))
        os.utime(status, ns=(ended_at + offset, ended_at + offset))
    lines = []
    for job in (1, 0):  # the later job announces first: both records exist when either counts
        config = _job_config(sweep_dir, {"n_jobs": 2})
        config.hydra.job.num = job
        lines.append(job_end_line(config, failed=False))
    assert lines[0].startswith("sweep study: 2/4 jobs ended, job 1 ")
    assert lines[1].startswith("sweep study: 1/4 jobs ended, job 0 ")
