"""The command-line tools as users run them: a named study swept with ``dlab -m``, its report, the wheel."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from divergence_lab.report.wandb_files import offline_run_files, read_offline_run

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def test_study_sweep_then_report(tmp_path):
    sweep = subprocess.run(
        [
            BIN / "dlab",
            "-m",
            "study=kd_divergences",
            "divergence=kl,sinkhorn",
            "seed=0,1",
            "trainer.max_epochs=1",
            "method.teacher.max_epochs=1",
            f"paths.output_root={tmp_path}",
            f"paths.teacher_cache={tmp_path / 'teachers'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    jobs = sorted((tmp_path / "sweeps" / "kd_divergences").glob("*/*/metrics.json"))
    assert len(jobs) == 4
    assert len(list((tmp_path / "teachers").glob("*/teacher.pt"))) == 1  # one teacher for the whole sweep
    # the sweep ends with its report: the main table (display names, ★) and where the rest is
    assert "Jensen-Shannon" not in sweep.stdout and "forward KL" in sweep.stdout and "★" in sweep.stdout
    assert f"Report (statistics, provenance, figures): {jobs[0].parents[1] / 'report.md'}" in sweep.stdout
    (teacher,) = (tmp_path / "teachers").glob("*/meta.json")
    teacher_acc = json.loads(teacher.read_text())["test_metrics"]["test/acc"]
    markdown = (jobs[0].parents[1] / "report.md").read_text()
    assert f"MLP (cache key {teacher.parent.name}): test acc {teacher_acc:.4f}, used by 4 run(s)" in markdown
    assert "- **Varying**:\n  - divergence.name: kl, sinkhorn\n" in markdown
    assert "Baseline: **forward KL**" in markdown and "not tested (n=2 < 3)" in markdown
    result = subprocess.run(
        [BIN / "dlab-report", str(tmp_path / "sweeps" / "kd_divergences")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "forward KL" in result.stdout and "Sinkhorn" in result.stdout and "± " in result.stdout
    assert f"Sweep {jobs[0].parents[1]}\n" in result.stdout  # a long path is never wrapped
    sweep_dir = jobs[0].parents[1]
    for name in ("report.md", "report.csv", "report.png"):
        assert (sweep_dir / name).is_file()
    assert "| Sinkhorn | 2 |" in (sweep_dir / "report.md").read_text()


def test_wheel_ships_the_configs_and_dlab_runs_from_it(tmp_path):
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = tmp_path.glob("divergence_lab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "divergence_lab/conf/train.yaml" in names
    configs = {Path(n).stem for n in names if n.startswith("divergence_lab/conf/divergence/")}
    from divergence_lab import divergences

    assert set(divergences.names()) <= configs
    conf = ROOT / "divergence_lab" / "conf"
    shipped_groups = ["study", "pld_variant", "sinkd_variant", "cts_variant", "legogcd_variant", "cts_search"]
    for group in [*shipped_groups, "protocol"]:  # the studies, the variant groups they sweep, the protocols
        files = sorted((conf / group).glob("*.yaml"))
        assert files and {f"divergence_lab/conf/{group}/{f.name}" for f in files} <= names
    studies = {f"divergence_lab/conf/study/{f.name}" for f in (ROOT / "sweeps").glob("*.yaml")}
    assert studies and studies <= names  # the top-level sweeps/ folder is what the wheel ships as studies
    site = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import divergence_lab; print(divergence_lab.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=60,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    helped = subprocess.run(
        [site / "bin" / "dlab", "--help"], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    entries = re.split(r"\n(?=\S)", helped.stdout)  # a wrapped group's continuation lines are indented
    groups = dict(
        " ".join(entry.split()).split(": ", 1)
        for entry in entries
        if entry.startswith(("divergence: ", "method: "))
    )
    assert set(groups["divergence"].split(", ")) == set(divergences.names())
    assert {"kd", "teacher", "bdkd"} <= set(groups["method"].split(", "))
    listed = {line.split()[0] for line in helped.stdout.splitlines() if line.startswith("  ")}
    assert {p.stem for p in (conf / "study").glob("*.yaml")} <= listed  # the studies, from the wheel


def test_job_killed_outright_resumes_when_the_same_command_runs_again(tmp_path):
    """SIGKILL mid-training (no handler runs); the same command into the same run folder resumes it."""
    import json
    import signal
    import time

    def command(run_dir):
        return [
            BIN / "dlab",
            # killed once its first epoch is saved: the other 15 (~0.35 s each at batch 16 on one thread)
            # leave seconds of margin for the kill to land mid-training, then the rerun resumes
            "trainer.max_epochs=16",
            "data.batch_size=16",
            "threads=1",  # epochs as long on any machine: never several threads fighting over shared cores
            "method.teacher.max_epochs=2",
            f"paths.output_root={tmp_path}",
            f"hydra.run.dir={run_dir}",
        ]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "last.ckpt").is_file():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / "metrics.json").exists()
    for run_dir in (killed, tmp_path / "straight"):
        result = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((killed / "status.json").read_text())["attempt"] == 2
    resumed = json.loads((killed / "metrics.json").read_text())["metrics"]
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())["metrics"]
    assert resumed == straight


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_local_launchers_run_every_job_and_point_to_wandb_sync(tmp_path, launcher):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [
            BIN / "dlab",
            "-m",
            f"hydra/launcher={launcher}",
            "logger=wandb",
            "divergence=kl,rkl,js",
            "trainer.max_epochs=1",
            "method.teacher.max_epochs=1",
            f"paths.output_root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "sweeps" / "kd_digits").iterdir()
    assert sorted(p.parent.name for p in sweep.glob("*/metrics.json")) == ["0", "1", "2"]
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in result.stdout + result.stderr
    ids = [(sweep / str(n) / "wandb_id.txt").read_text().strip() for n in range(3)]
    assert len(set(ids)) == 3  # one W&B run per job, never one for the whole sweep
    for n, run_id in enumerate(ids):
        (run_file,) = offline_run_files(sweep / str(n))
        assert read_offline_run(run_file).run_id == run_id
    if launcher == "submitit_local":  # at most 2 at a time: job 2 started after jobs 0 and 1 had finished
        started = (sweep / "2" / "status.json").stat().st_mtime
        assert started >= max((sweep / str(n) / "metrics.json").stat().st_mtime for n in (0, 1))
