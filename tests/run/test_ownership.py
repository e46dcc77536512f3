"""One owner per folder: a second ``dlab`` on a run or sweep folder in use is refused at once in one line,
the first finishes untouched; a lock left behind by a process that is gone is taken over with a notice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from divergence_lab.ground.lock_record import LOCK_FILE, STALE_AFTER_S, LockRecord, read_lock_record
from divergence_lab.run.ownership import FolderInUse, acquire, check_free, release
from tests.conftest import run_training
from tests.faults.test_sweep_shutdown import _env, _start

BIN = Path(sys.executable).parent
REFUSAL_LIMIT_S = 2.0  # the second process must have been refused within this
WAIT_S = 240  # the longest the tiny runs may take on a loaded machine
POLL_S = 0.1
LONG_RUN = ["method=teacher", "trainer.max_epochs=60"]  # trains long enough for a second process to arrive


def _wait_until_owned(folder: Path, process: subprocess.Popen, running: Path) -> LockRecord:
    """The owner's lock record, once the owner is at work (``running``, a status.json, exists)."""
    deadline = time.monotonic() + WAIT_S
    while (record := read_lock_record(folder)) is None or not running.is_file():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{folder} was never locked"
        time.sleep(POLL_S)
    return record


def _stamps(folder: Path) -> dict[str, int]:
    """The files a second process would write first (Hydra's record, the sweep's), by modification time."""
    names = [".hydra", "multirun.yaml", "sweep_fingerprint.json"]
    return {
        str(path): path.stat().st_mtime_ns
        for name in names
        for path in ([folder / name] if (folder / name).is_file() else (folder / name).glob("*"))
    }


def _refused_in_time(args: list[str], tmp_path: Path, folder: Path, owner: int) -> float:
    before = _stamps(folder)
    started = time.monotonic()
    second = subprocess.run(
        [str(BIN / "dlab"), *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    latency = time.monotonic() - started
    assert second.returncode == 2, second.stderr[-3000:]
    assert "Traceback" not in second.stdout + second.stderr
    (line,) = [line for line in second.stderr.splitlines() if line.strip()]
    assert line.startswith(f"dlab: error: {folder} is in use by dlab pid {owner} on host ")
    assert line.endswith(f"wait for it, or stop it with kill {owner}")
    assert latency < REFUSAL_LIMIT_S, latency
    assert before and _stamps(folder) == before  # the second process wrote nothing
    return latency


def test_a_second_run_in_the_same_folder_is_refused_and_the_first_finishes(tmp_path):
    run_dir = tmp_path / "run"
    args = [*LONG_RUN, f"hydra.run.dir={run_dir}"]
    first = _start(args, tmp_path)
    try:
        owner = _wait_until_owned(run_dir, first, run_dir / "status.json")
        assert owner.pid == first.pid
        _refused_in_time(args, tmp_path, run_dir, first.pid)
        _, err = first.communicate(timeout=WAIT_S)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["attempt"] == 1 and status["pid"] == first.pid
    assert not (run_dir / LOCK_FILE).exists()


def test_a_second_sweep_in_the_same_folder_is_refused_and_the_first_finishes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "method=teacher", "trainer.max_epochs=20", "seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
    first = _start(args, tmp_path)
    try:
        owner = _wait_until_owned(sweep_dir, first, sweep_dir / "0" / "status.json")
        assert owner.pid == first.pid
        _refused_in_time(args, tmp_path, sweep_dir, first.pid)
        _, err = first.communicate(timeout=WAIT_S)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    for job in ("0", "1"):
        assert json.loads((sweep_dir / job / "metrics.json").read_text())["metrics"]
    assert not (sweep_dir / LOCK_FILE).exists()


def _dead_pid() -> int:
    ended = subprocess.Popen(["true"])
    ended.wait()
    return ended.pid


def _write_record(folder: Path, record: LockRecord) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_FILE).write_bytes(record.to_bytes())


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_notice(tmp_path, capsys):
    run_dir = tmp_path / "run"
    dead = _dead_pid()
    _write_record(run_dir, LockRecord(os.uname().nodename, dead, "2026-01-01T00:00:00+0000", time.time()))
    run_training(tmp_path, ["method=teacher", "trainer.max_epochs=1"], "run")
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("dlab: taking over")]
    assert len(notices) == 1 and f"dlab pid {dead} on host" in notices[0], err
    assert "no longer running" in notices[0]
    assert (run_dir / "metrics.json").is_file() and not (run_dir / LOCK_FILE).exists()


def test_another_hosts_lock_counts_until_its_heartbeat_stops(tmp_path, capsys):
    folder = tmp_path / "shared"
    fresh = LockRecord("another-host", 4321, "2026-01-01T00:00:00+0000", time.time())
    _write_record(folder, fresh)
    with pytest.raises(FolderInUse, match="in use by dlab pid 4321 on host another-host"):
        check_free(folder)
    with pytest.raises(FolderInUse):
        acquire(folder)
    _write_record(folder, LockRecord("another-host", 4321, fresh.started_at, time.time() - 2 * STALE_AFTER_S))
    check_free(folder)
    acquire(folder)
    try:
        assert "whose heartbeat stopped" in capsys.readouterr().err
        assert read_lock_record(folder).pid == os.getpid()
    finally:
        release(folder)
    assert not (folder / LOCK_FILE).exists()


def test_a_lock_held_by_a_live_process_is_refused_and_freed_when_it_dies(tmp_path):
    """The kernel lock itself decides on this host: a holder killed with SIGKILL frees the folder."""
    folder = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from divergence_lab.run.ownership import acquire; "
            "acquire(sys.argv[1]); print('owned', flush=True); time.sleep(600)",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "owned"
        with pytest.raises(FolderInUse, match=f"stop it with kill {holder.pid}"):
            acquire(folder)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert read_lock_record(folder).pid == holder.pid  # left behind by the killed holder
    acquire(folder)
    release(folder)
