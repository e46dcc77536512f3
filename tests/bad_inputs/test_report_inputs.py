"""Careless input to ``dlab-report``: refused in one line (exit 2) before any report file is touched.

Every case runs the installed console script in a fresh work folder holding a hand-written sweep (the
files Hydra's multirun leaves: ``multirun.yaml``, ``<job>/.hydra/overrides.yaml``, ``<job>/metrics.json``)
and a report written earlier, which must stay byte-identical.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bad_inputs.harness import BadInput, assert_refused, run_program

SWEEP = "sweep"
DIVERGENCES = ("kl", "rkl")
SEEDS = (0, 1)
EARLIER_REPORT = ("report.md", "report.csv", "report.png")
READ_ONLY = 0o555
TRUNCATED_JSON = '{"metrics": {"test/acc": 0.9'


def _job(sweep: Path, num: int, overrides: list[str], record: dict | None) -> Path:
    """One job folder: its overrides and, when it finished, its ``metrics.json``."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if record is not None:
        (job / "metrics.json").write_text(json.dumps(record))
    return job


def write_sweep(work: Path) -> Path:
    """A finished ``divergence x seed`` sweep and the report an earlier ``dlab-report`` left in it."""
    sweep = work / SWEEP
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    grid = [(divergence, seed) for divergence in DIVERGENCES for seed in SEEDS]
    for num, (divergence, seed) in enumerate(grid):
        metrics = {"test/acc": 0.9 - 0.1 * num, "test/ece": 0.05 * (seed + 1)}
        record = {"metrics": metrics, "seed": seed, "wall_time_s": 10.0 + num}
        _job(sweep, num, [f"divergence={divergence}", f"seed={seed}"], record)
    for name in EARLIER_REPORT:
        (sweep / name).write_text(f"an earlier {name}\n")
    return sweep


def _a_file(work: Path) -> None:
    (work / SWEEP).write_text("not a folder\n")


def _empty_folder(work: Path) -> None:
    (work / SWEEP).mkdir()


def _no_jobs(work: Path) -> None:
    (work / SWEEP).mkdir()
    (work / SWEEP / "multirun.yaml").write_text("{}\n")


def _only_job_truncated(work: Path) -> None:
    _no_jobs(work)
    (_job(work / SWEEP, 0, ["divergence=kl", "seed=0"], None) / "metrics.json").write_text(TRUNCATED_JSON)


def _metrics_not_an_object(work: Path) -> None:
    _no_jobs(work)
    _job(work / SWEEP, 0, ["divergence=kl", "seed=0"], {"metrics": [0.9, 0.1], "seed": 0})


def _report_md_is_a_folder(work: Path) -> None:
    sweep = write_sweep(work)
    (sweep / "report.md").unlink()
    (sweep / "report.md").mkdir()
    (sweep / "report.md" / "notes.txt").write_text("kept\n")


def _read_only_sweep(work: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the report.md-is-a-folder case covers this path")
    write_sweep(work).chmod(READ_ONLY)


def _half_written_multirun(work: Path) -> None:
    (write_sweep(work) / "multirun.yaml").write_text("hydra:\n  sweeper: [basic\n")


SETUPS: dict[str, Callable[[Path], object]] = {
    "sweep": write_sweep,
    "file": _a_file,
    "empty": _empty_folder,
    "no_jobs": _no_jobs,
    "only_job_truncated": _only_job_truncated,
    "metrics_not_an_object": _metrics_not_an_object,
    "report_md_is_a_folder": _report_md_is_a_folder,
    "read_only": _read_only_sweep,
    "half_written_multirun": _half_written_multirun,
}

CASES = [
    BadInput("path-does-not-exist", ["nowhere"], "nowhere does not exist", "dlab-report"),
    BadInput("path-is-a-file", [SWEEP], f"{SWEEP} is not a directory", "dlab-report", setup="file"),
    BadInput("folder-without-runs", [SWEEP], f"no sweep found in {SWEEP}", "dlab-report", setup="empty"),
    BadInput("sweep-without-jobs", [SWEEP], "no finished job", "dlab-report", setup="no_jobs"),
    BadInput(
        "only-job-half-written",
        [SWEEP],
        f"unreadable: {SWEEP}/0/metrics.json (JSONDecodeError",
        "dlab-report",
        setup="only_job_truncated",
    ),
    BadInput(
        "metrics-not-an-object",
        [SWEEP],
        "expected a JSON object with a 'metrics' object",
        "dlab-report",
        setup="metrics_not_an_object",
    ),
    BadInput(
        "metric-typo",
        [SWEEP, "--metrics", "test/accuracy"],
        "'test/accuracy' (did you mean 'test/acc'?); recorded metrics: test/acc, test/ece, wall_time_s",
        "dlab-report",
        setup="sweep",
    ),
    BadInput(
        "one-of-two-metrics-unknown",
        [SWEEP, "--metrics", "test/acc", "val/loss"],
        f"no run of {SWEEP} recorded 'val/loss';",
        "dlab-report",
        setup="sweep",
    ),
    BadInput(
        "empty-metric", [SWEEP, "--metrics", ""], "--metrics: empty metric name", "dlab-report", setup="sweep"
    ),
    BadInput(
        "metrics-without-a-value",
        [SWEEP, "--metrics"],
        "--metrics: expected at least one argument",
        "dlab-report",
        setup="sweep",
    ),
    BadInput(
        "unknown-flag",
        [SWEEP, "--output", "out.md"],
        "unrecognized arguments: --output out.md",
        "dlab-report",
        setup="sweep",
    ),
    BadInput("no-path", [], "the following arguments are required: path", "dlab-report", setup="sweep"),
    BadInput("empty-path", [""], "empty path", "dlab-report", setup="sweep"),
    BadInput(
        "report-md-is-a-folder",
        [SWEEP],
        f"cannot write {SWEEP}/report.md: it exists and is not a file",
        "dlab-report",
        setup="report_md_is_a_folder",
    ),
    BadInput("read-only-sweep", [SWEEP], "is not writable", "dlab-report", setup="read_only"),
    BadInput(
        "half-written-multirun-yaml",
        [SWEEP],
        f"cannot read {SWEEP}/multirun.yaml",
        "dlab-report",
        setup="half_written_multirun",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_careless_input_is_refused_in_one_line(case: BadInput, tmp_path: Path) -> None:
    if case.setup is not None:
        SETUPS[case.setup](tmp_path)
    assert_refused(case, tmp_path, tmp_path)


def test_a_half_written_metrics_json_is_listed_and_the_other_jobs_reported(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path)
    (sweep / "1" / "metrics.json").write_text(TRUNCATED_JSON)
    result = run_program("dlab-report", [SWEEP], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    unreadable = f"- unreadable: {SWEEP}/1/metrics.json (JSONDecodeError: "
    printed = [line for line in result.stdout.splitlines() if line.startswith(unreadable)]
    assert len(printed) == 1, result.stdout
    markdown = (sweep / "report.md").read_text()
    assert "| kl | 1 |" in markdown and "| rkl | 2 |" in markdown  # seed 1 of kl is the unreadable job
    assert "Jobs: 3 finished, 1 unreadable" in markdown
    assert "  " + printed[0] in markdown.splitlines()  # the same line, listed in the provenance block


def test_help_still_prints_the_usage(tmp_path: Path) -> None:
    result = run_program("dlab-report", ["--help"], tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("usage: dlab-report")
    assert "--metrics" in result.stdout and not result.stderr
