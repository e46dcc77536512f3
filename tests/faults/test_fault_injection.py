"""A run interrupted at any moment and rerun with the same command ends with the numbers of a run that was
never interrupted; a folder of another config is refused and left untouched.

SIGINT and SIGTERM are sent inside this process (their handlers turn them into a clean exit: 130 / 143,
one line, ``status.json`` = interrupted); SIGKILL, which no handler sees, kills a ``dlab`` subprocess. Every
case reruns the interrupted run in its own folder and compares the whole ``metrics`` record.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_inputs.harness import snapshot
from tests.conftest import run_training
from tests.faults.hooks import PHASES, STAGE_SAVED

REPO = Path(__file__).parents[2]
KD = ["trainer.max_epochs=3", "method.teacher.max_epochs=2"]
CTS = [
    "experiment=cts_digits",
    "trainer.max_epochs=2",
    "method.search.epochs=3",
    "method.density=0.05",
]
CONFIG_OF_PHASE = {"cts search": CTS}
EXIT_CODE = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _overrides(phase: str, cache: Path) -> list[str]:
    return [*CONFIG_OF_PHASE.get(phase, KD), f"paths.teacher_cache={cache}"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs of both configs: ``{name: metrics}``; their teacher cache is shared by the cases
    that do not interrupt the teacher."""
    root = tmp_path_factory.mktemp("reference")
    cache = root / "teachers"
    return {
        "kd": run_training(root, _overrides("fit", cache), "kd")[0]["metrics"],
        "cts": run_training(root, _overrides("cts search", cache), "cts")[0]["metrics"],
        "cache": cache,
    }


def _case_cache(phase: str, reference: dict, tmp_path: Path) -> Path:
    # interrupting the teacher needs a cache without it; every other phase reuses the trained teacher
    return tmp_path / "teachers" if phase == "teacher" else reference["cache"]


def _expected(phase: str, reference: dict) -> dict:
    return results(reference["cts" if phase == "cts search" else "kd"])


def results(metrics: dict) -> dict:
    """The numbers a rerun must reproduce exactly: all but wall-clock timings (``test/search_time_s``)."""
    return {name: value for name, value in metrics.items() if not name.endswith("time_s")}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", PHASES)
def test_interrupted_run_reruns_to_the_uninterrupted_result(
    phase, signum, reference, tmp_path, monkeypatch, capsys
):
    from tests.faults.hooks import install

    overrides = _overrides(phase, _case_cache(phase, reference, tmp_path))
    with monkeypatch.context() as patched:
        install(phase, signum, patched.setattr)
        with pytest.raises(SystemExit) as stopped:
            run_training(tmp_path, overrides, "run")
    assert stopped.value.code == EXIT_CODE[signum]
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("dlab: interrupted at "), errors
    assert "; rerun: dlab " in errors[0] and "hydra.run.dir=" in errors[0]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "interrupted" and status["signal"] == signal.Signals(signum).name
    assert not (tmp_path / "run" / "metrics.json").exists()

    rerun, run_dir = run_training(tmp_path, overrides, "run")
    assert results(rerun["metrics"]) == _expected(phase, reference)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def _dlab_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DLAB_OUTPUT_ROOT": str(tmp_path / "outputs")}


@pytest.mark.parametrize("phase", PHASES)
def test_killed_run_reruns_to_the_uninterrupted_result(phase, reference, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [*_overrides(phase, _case_cache(phase, reference, tmp_path)), f"hydra.run.dir={run_dir}"]
    _kill_at(phase, overrides, tmp_path)
    assert not (run_dir / "metrics.json").exists()
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"  # nobody could say more

    rerun, _ = run_training(tmp_path, overrides[:-1], "run")
    assert results(rerun["metrics"]) == _expected(phase, reference)


def _kill_at(phase: str, overrides: list[str], tmp_path: Path) -> None:
    """Run ``dlab overrides`` in a subprocess that SIGKILLs itself at ``phase``."""
    killed = subprocess.run(
        [sys.executable, "-m", "tests.faults.driver", phase, "SIGKILL", *overrides],
        cwd=REPO,
        env=_dlab_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]


LEGOGCD = ["experiment=legogcd_digits", "trainer.max_epochs=2", "method.pretrain.epochs=2"]
# method -> (its module, its overrides, its last stage, its stage functions: none may run on the rerun)
STAGE_CASES = {
    "cts": ("pruning", CTS, "search", ("rewind_point", "search")),
    "legogcd": ("legogcd", LEGOGCD, "simclr", ("simclr",)),
}


@pytest.mark.parametrize("method", list(STAGE_CASES))
def test_a_run_killed_after_its_stage_loads_the_stage_instead_of_running_it_again(
    method, reference, tmp_path, monkeypatch
):
    module_name, overrides, stage, stage_functions = STAGE_CASES[method]
    overrides = [*overrides, f"paths.teacher_cache={reference['cache']}"]
    expected = (
        reference["cts"] if method == "cts" else run_training(tmp_path, overrides, "reference")[0]["metrics"]
    )
    run_dir = tmp_path / "run"
    for _ in stage_functions:  # each kill comes right after one more stage is saved (CTS: rewind, search)
        _kill_at(STAGE_SAVED, [*overrides, f"hydra.run.dir={run_dir}"], tmp_path)
        if (run_dir / "stages" / f"{stage}.pt").is_file():
            break
    assert (run_dir / "stages" / f"{stage}.pt").is_file() and not (run_dir / "metrics.json").exists()
    stage_mtimes = {path.name: path.stat().st_mtime_ns for path in (run_dir / "stages").iterdir()}

    module = importlib.import_module(f"divergence_lab.methods.{module_name}")
    for name in stage_functions:
        monkeypatch.setattr(module, name, _must_not_run(name))
    rerun, _ = run_training(tmp_path, overrides, "run")
    assert results(rerun["metrics"]) == results(expected)  # loaded, with the random state it left behind
    assert {path.name: path.stat().st_mtime_ns for path in (run_dir / "stages").iterdir()} == stage_mtimes


def _must_not_run(name: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"stage function {name} ran again on the rerun")

    return refuse


def _dlab(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "divergence_lab.entry.cli", *args],
        cwd=tmp_path,
        env=_dlab_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    return line


def test_a_run_folder_of_another_config_is_refused_untouched_and_moved_aside_with_fresh(reference, tmp_path):
    run_dir = tmp_path / "run"
    run_training(tmp_path, _overrides("fit", reference["cache"]), "run")
    before = snapshot(run_dir)
    args = [*_overrides("fit", reference["cache"]), f"hydra.run.dir={run_dir}"]

    refused = _dlab([*args, "divergence=rkl", "trainer.max_epochs=4"], tmp_path)
    line = _one_error_line(refused)
    assert f"{run_dir} holds a run of another config" in line
    assert 'divergence.name: "kl" -> "rkl"' in line and "trainer.max_epochs: 3 -> 4" in line
    assert "ckpt_path=fresh" in line
    assert snapshot(run_dir) == before

    again, _ = run_training(tmp_path, _overrides("fit", reference["cache"]), "run")  # the same config
    assert again["metrics"] == reference["kd"] and snapshot(run_dir) == before  # its result, nothing redone

    before_fresh = snapshot(run_dir)
    fresh = _dlab([*args, "divergence=rkl", "trainer.max_epochs=1", "ckpt_path=fresh"], tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    (moved,) = (tmp_path / "superseded").iterdir()
    assert snapshot(moved) == before_fresh  # the old run, whole, beside the new one
    assert json.loads((run_dir / "metrics.json").read_text())["divergence"] == "rkl"


def test_a_sweep_folder_of_another_grid_is_refused_before_any_job_starts(reference, tmp_path):
    sweep_dir = tmp_path / "sweep"
    common = [
        "-m",
        "trainer.max_epochs=1",
        "method.teacher.max_epochs=2",
        f"paths.teacher_cache={reference['cache']}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    first = _dlab([*common, "divergence=kl,rkl"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(json.loads((sweep_dir / j / "metrics.json").read_text())["divergence"] for j in "01") == [
        "kl",
        "rkl",
    ]
    before = snapshot(sweep_dir)

    refused = _dlab([*common, "divergence=tv,hellinger"], tmp_path)
    line = _one_error_line(refused)
    assert f"{sweep_dir} holds a sweep of another config" in line and "sweep:divergence" in line
    assert snapshot(sweep_dir) == before

    rerun = _dlab([*common, "divergence=kl,rkl"], tmp_path)  # the same sweep: every job already finished
    assert rerun.returncode == 0 and rerun.stdout.count("finished earlier, nothing to do") == 2
    assert {k: v for k, v in snapshot(sweep_dir).items() if k.endswith("metrics.json")} == {
        k: v for k, v in before.items() if k.endswith("metrics.json")
    }


def test_final_checkpoint_without_metrics_goes_straight_to_testing(reference, tmp_path):
    """The state a crash between the last checkpoint and metrics.json leaves behind, rebuilt by hand."""
    overrides = _overrides("fit", reference["cache"])
    _, run_dir = run_training(tmp_path, overrides, "run")
    (run_dir / "metrics.json").unlink()
    last = run_dir / "checkpoints" / "last.ckpt"
    mtime = last.stat().st_mtime_ns
    rerun, _ = run_training(tmp_path, overrides, "run")
    assert rerun["metrics"] == reference["kd"]
    assert last.stat().st_mtime_ns == mtime  # nothing was trained again
    shutil.rmtree(run_dir)
