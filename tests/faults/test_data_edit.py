"""A data file edited after a run (finished or killed) or a sweep: the same command is refused in one line
naming the file, exit 2, the folder untouched; ``ckpt_path=fresh`` then runs on the new data. Driven
through the real ``dlab`` console script."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.bad_inputs.harness import run_program, snapshot
from tests.faults.test_fault_injection import _kill_at

CSV = "tables/t.csv"
RUN = ["data=tabular", f"data.source={CSV}", "model=mlp", "method=teacher", "trainer.max_epochs=2"]
ROWS_PER_CLASS = 10
CHANGED = "sha256"


def _write_table(work: Path, shift: float = 0.0) -> Path:
    path = work / CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{i + shift},{(i * 7) % 5},{label}" for label in "ab" for i in range(ROWS_PER_CLASS)]
    path.write_text("\n".join(["x1,x2,label", *rows]) + "\n")
    return path


def _records(folder: Path) -> dict[str, str]:
    """The folder's files and their digests, less locks (a killed run's stale lock may be taken over)."""
    return {name: digest for name, digest in snapshot(folder).items() if not name.endswith(".lock")}


def _refused_in_one_line(result: subprocess.CompletedProcess, mentions: str) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    # a notice may come first (a killed run's stale lock is taken over); the refusal is one line
    lines = [line for line in result.stderr.splitlines() if line.startswith("dlab: error")]
    assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr
    assert mentions in lines[0], lines[0]
    assert result.returncode == 2, output
    return lines[0]


def test_a_finished_run_is_refused_after_its_csv_changes_and_fresh_runs_again(tmp_path: Path) -> None:
    _write_table(tmp_path)
    run_dir = tmp_path / "run"
    argv = [*RUN, f"hydra.run.dir={run_dir}"]
    assert run_program("dlab", argv, tmp_path).returncode == 0
    first = json.loads((run_dir / "fingerprint.json").read_text())["settings"][f"data.content:{CSV}"]
    _write_table(tmp_path, shift=0.5)
    before = _records(run_dir)
    line = _refused_in_one_line(run_program("dlab", argv, tmp_path), f"{run_dir} was made from other data: ")
    assert f"{CSV} changed since ({CHANGED} {first[:8]}… -> " in line and "ckpt_path=fresh" in line
    assert _records(run_dir) == before  # not "finished earlier": refused, nothing changed
    fresh = run_program("dlab", [*argv, "ckpt_path=fresh"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert len(list((tmp_path / "superseded").iterdir())) == 1
    now = json.loads((run_dir / "fingerprint.json").read_text())["settings"][f"data.content:{CSV}"]
    assert now != first and (run_dir / "metrics.json").is_file()


def test_a_killed_run_is_refused_after_its_csv_changes(tmp_path: Path) -> None:
    path = _write_table(tmp_path)
    run_dir = tmp_path / "run"
    argv = [*RUN[:1], f"data.source={path}", *RUN[2:], f"hydra.run.dir={run_dir}"]
    _kill_at("fit", argv, tmp_path)
    assert not (run_dir / "metrics.json").exists()
    _write_table(tmp_path, shift=0.5)
    before = _records(run_dir)
    _refused_in_one_line(
        run_program("dlab", argv, tmp_path), f"was made from other data: {path} changed since"
    )
    assert _records(run_dir) == before


def test_a_sweep_folder_is_refused_after_its_csv_changes(tmp_path: Path) -> None:
    _write_table(tmp_path)
    sweep = tmp_path / "sweep"
    argv = ["-m", *RUN[:-1], "trainer.max_epochs=1", "seed=0,1", f"hydra.sweep.dir={sweep}"]
    done = run_program("dlab", argv, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = json.loads((sweep / "sweep_fingerprint.json").read_text())["settings"]
    jobs = [json.loads((sweep / job / "fingerprint.json").read_text())["settings"] for job in ("0", "1")]
    assert all(job[f"data.content:{CSV}"] == stored[f"data.content:{CSV}"] for job in jobs)  # they agree
    _write_table(tmp_path, shift=0.5)
    before = _records(sweep)
    line = _refused_in_one_line(run_program("dlab", argv, tmp_path), f"{sweep} was made from other data: ")
    assert f"{CSV} changed since" in line and "hydra.sweep.dir=..." in line
    assert _records(sweep) == before
