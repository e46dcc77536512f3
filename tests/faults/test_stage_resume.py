"""A run stopped inside a multi-epoch stage continues that stage after its last finished epoch and ends
with exactly the numbers of an uninterrupted run.

Each case stops a real run (SIGINT at a stage's progress line, in this process; or SIGKILL of a ``dlab``
subprocess, which no handler sees) after epoch / round k of one loop: the teacher's training, the dense
rewind training, the CTS search, an LTR round (inside a round and between rounds), SimCLR pre-training.
The rerun in the same folder must log that it resumes at k + 1, never log the epochs up to k again, and
give the same stage outputs (every tensor), the same teacher and the same metrics as the uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_training

REPO = Path(__file__).parents[2]
CTS = [
    "experiment=cts_digits",
    "trainer.max_epochs=1",
    "method.search.epochs=3",
    "method.density=0.05",
    "method.rewind_epochs=2",
]
LTR = [
    "experiment=cts_digits",
    "method=prune",
    "method.pruner=ltr",
    "method.density=0.3",  # two rounds: 1 -> 0.5 -> 0.3
    "method.ltr.prune_fraction=0.5",
    "method.ltr.epochs_per_round=2",
    "method.rewind_epochs=1",
    "trainer.max_epochs=1",
]
LEGOGCD = ["experiment=legogcd_digits", "trainer.max_epochs=1", "method.pretrain.epochs=3"]
# a teacher with dropout: its training draws from the random streams, which a resumed one must restore
KD = ["trainer.max_epochs=1", "method.teacher.max_epochs=3", "method.teacher.model.dropout=0.3"]
CONFIGS = {"cts": CTS, "ltr": LTR, "legogcd": LEGOGCD, "kd": KD}

# case -> (config, the loop stopped, stopped after this many steps, its steps, its unit)
CASES = {
    "teacher": ("kd", "teacher", 2, 3, "epoch"),
    "rewind": ("cts", "rewind", 1, 2, "epoch"),
    "cts search": ("cts", "cts search", 2, 3, "epoch"),
    "ltr inside a round": ("ltr", "ltr round 2/2", 1, 2, "epoch"),
    "ltr between rounds": ("ltr", "ltr", 1, 2, "round"),
    "simclr": ("legogcd", "simclr pretraining", 2, 3, "epoch"),
}
# loops that ran before the stopped one, in the stopped run: their lines must not come back either
EARLIER_LOOPS = {
    "cts search": ["rewind"],
    "ltr inside a round": ["rewind", "ltr round 1/2"],
    "ltr between rounds": ["rewind", "ltr round 1/2"],
}


def results(metrics: dict) -> dict:
    """All numbers but wall-clock timings (``test/search_time_s``)."""
    return {name: value for name, value in metrics.items() if not name.endswith("time_s")}


def stage_outputs(run_dir: Path) -> dict:
    """Every stage's saved output but its timings, by stage file name."""
    return {
        path.name: {
            key: value
            for key, value in torch.load(path, weights_only=True)["output"].items()
            if not key.endswith("time_s")
        }
        for path in sorted((run_dir / "stages").glob("*.pt"))
    }


def assert_identical(a, b) -> None:
    """The same structure with bit-identical tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_identical(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_identical(x, y)
    else:
        assert a == b


def cached_teachers(cache: Path) -> dict:
    return {path.parent.name: torch.load(path, weights_only=True) for path in cache.glob("*/teacher.pt")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs of every config: ``{config: (metrics, run dir)}``."""
    root = tmp_path_factory.mktemp("reference")
    return {name: run_training(root / name, overrides, "run") for name, overrides in CONFIGS.items()}


def _stop_at(loop: str, steps: int, monkeypatch) -> None:
    """SIGINT to this process at the progress line of step ``steps`` of ``loop``."""
    from divergence_lab.ground.progress import StageProgress

    original_step = StageProgress.step

    def step(self: StageProgress, done: int, values=None) -> str:
        line = original_step(self, done, values)
        if self.stage == loop and done == steps:
            os.kill(os.getpid(), signal.SIGINT)
        return line

    monkeypatch.setattr(StageProgress, "step", step)


def _progress_lines(caplog) -> list[str]:
    """The progress lines logged, each cut before its values (``[cts search] epoch 3/3``)."""
    return [
        record.getMessage().split("  ")[0]
        for record in caplog.records
        if record.getMessage().startswith("[") and not record.getMessage().startswith("[stage]")
    ]


def _assert_resumed_as_uninterrupted(case: str, reference: dict, root: Path, caplog) -> None:
    config, loop, stopped_after, total, unit = CASES[case]
    lines = _progress_lines(caplog)
    resuming = f"[{loop}] resuming {loop} at {unit} {stopped_after + 1}/{total} ({stopped_after} done before)"
    assert resuming in lines, lines
    assert lines.count(resuming) == 1
    redone = [f"[{loop}] {unit} {step}/{total}" for step in range(1, stopped_after + 1)]
    redone += [line for line in lines if any(line.startswith(f"[{e}] ") for e in EARLIER_LOOPS.get(case, []))]
    assert not set(redone) & set(lines), lines
    following = [line for line in lines if line.startswith(f"[{loop}] {unit} ")]
    assert following == [f"[{loop}] {unit} {step}/{total}" for step in range(stopped_after + 1, total + 1)]

    expected_metrics, expected_dir = reference[config]
    rerun, run_dir = json.loads((root / "run" / "metrics.json").read_text()), root / "run"
    assert results(rerun["metrics"]) == results(expected_metrics["metrics"])
    assert_identical(stage_outputs(run_dir), stage_outputs(expected_dir))
    assert not list((run_dir / "stages").glob("*.partial"))  # gone once each stage was saved
    if config == "cts":
        trajectory = "density_trajectory.json"
        assert (run_dir / trajectory).read_text() == (expected_dir / trajectory).read_text()
    if config == "kd":
        assert_identical(
            cached_teachers(root / "teachers"), cached_teachers(expected_dir.parent / "teachers")
        )
        assert not list((root / "teachers").glob("*.partial"))


@pytest.mark.parametrize("case", list(CASES))
def test_a_run_interrupted_inside_a_stage_continues_it_to_the_uninterrupted_result(
    case, reference, tmp_path, monkeypatch, caplog
):
    config, loop, stopped_after, _, _ = CASES[case]
    overrides = CONFIGS[config]
    with monkeypatch.context() as patched:
        _stop_at(loop, stopped_after, patched)
        with pytest.raises(SystemExit) as stopped:
            run_training(tmp_path, overrides, "run")
    assert stopped.value.code == 130
    assert not (tmp_path / "run" / "metrics.json").exists()

    caplog.clear()
    caplog.set_level("INFO", logger="divergence_lab")
    run_training(tmp_path, overrides, "run")
    _assert_resumed_as_uninterrupted(case, reference, tmp_path, caplog)


KILL_CASES = {"cts search": "cts search", "teacher": "teacher"}  # case -> the phase of tests.faults.hooks


@pytest.mark.parametrize("case", list(KILL_CASES))
def test_a_run_killed_inside_a_stage_continues_it_to_the_uninterrupted_result(
    case, reference, tmp_path, caplog
):
    """SIGKILL right after the first step's progress line (``tests.faults.hooks``): one step kept."""
    config = CASES[case][0]
    cache = tmp_path / "teachers"
    overrides = [*CONFIGS[config], f"paths.teacher_cache={cache}", f"hydra.run.dir={tmp_path / 'run'}"]
    killed = subprocess.run(
        [sys.executable, "-m", "tests.faults.driver", KILL_CASES[case], "SIGKILL", *overrides],
        cwd=REPO,
        env={**os.environ, "DLAB_OUTPUT_ROOT": str(tmp_path / "outputs")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    caplog.set_level("INFO", logger="divergence_lab")
    run_training(tmp_path, CONFIGS[config], "run")
    lines = _progress_lines(caplog)
    loop, _, total, _ = CASES[case][1:]
    assert f"[{loop}] resuming {loop} at epoch 2/{total} (1 done before)" in lines, lines
    assert f"[{loop}] epoch 1/{total}" not in lines
    expected_metrics, expected_dir = reference[config]
    rerun = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert results(rerun["metrics"]) == results(expected_metrics["metrics"])
    assert_identical(stage_outputs(tmp_path / "run"), stage_outputs(expected_dir))
