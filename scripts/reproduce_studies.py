"""Run one seed of every named study (``dlab -m study=<name>``) and record, or check, its numbers.

A change meant to leave results alone (a refactoring, a new layer) must give the same test metrics as the
code before it. This script runs a one-seed slice of each study (``SLICES``), reads every job's
``metrics.json``, and either writes them (``--record FILE``) or compares them with a recorded file
(``--check FILE``): one line per study with the number of jobs and the largest absolute difference; exit
code 1 when any number differs by more than ``--tolerance`` (default 0: bit for bit). Timings (metrics
named ``*time_s``, such as ``test/search_time_s``) are recorded but not compared. ``--save FILE`` keeps
the numbers of a check.

    python scripts/reproduce_studies.py --record docs/results/seed0.json
    python scripts/reproduce_studies.py --check docs/results/seed0.json

Numbers are comparable on one machine with one thread count (``metrics.json`` records ``threads``). The
teachers are trained afresh in a scratch cache: a teacher from the user's cache may have been trained at
another thread count, and its last bits would move every distilled student's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TIMING_SUFFIX = "time_s"  # wall-clock metrics: they differ between any two runs
KEYLESS_OVERRIDES = ("hydra.", "study=")  # the same for every job of a study: not part of a job's key

# study -> the command-line overrides that cut its grid down to one seed (and one value of a long axis)
SLICES: dict[str, list[str]] = {
    "kd_divergences": ["seed=0"],
    "bdkd_calibration": ["seed=0", "data.label_noise=0.0"],
    "pld_ranking": ["seed=0"],
    "sinkd_divergences": ["seed=0"],
    "sinkd_batch_size": ["seed=0", "data.batch_size=64"],
    "cts_pruning": ["seed=0", "method.density=0.01"],
    "cts_sanity": ["seed=0"],
    "legogcd_ablation": ["seed=0"],
    "kd_across_datasets": ["seed=0"],
    "lm_divergences": ["seed=0"],
    "rl_divergences": ["seed=0", "method.regulariser.beta=0.2"],
}


def job_key(job_dir: Path) -> str:
    """The job's own overrides (its grid point), sorted: the same string before and after a change."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    return " ".join(sorted(o for o in overrides if not o.startswith(KEYLESS_OVERRIDES)))


def run_study(dlab: list[str], study: str, overrides: list[str], out: Path, teachers: Path) -> dict:
    """Run one study's slice into ``out`` with the teacher cache ``teachers``; return ``{job key: test
    metrics}``."""
    command = [*dlab, "-m", f"study={study}", *overrides, f"hydra.sweep.dir={out}"]
    environment = {**os.environ, "DLAB_TEACHER_CACHE": str(teachers)}  # not an override: job keys stay
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    except FileNotFoundError:
        raise SystemExit(f"reproduce: cannot run {dlab[0]!r}; give the command with --dlab") from None
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"reproduce: {study} failed ({shlex.join(command)}):\n{tail}")
    jobs = {}
    for metrics_file in sorted(out.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())["metrics"]
        jobs[job_key(metrics_file.parent)] = metrics
    return jobs


def compared(metrics: dict) -> dict:
    """The metrics a rerun must reproduce: all but timings."""
    return {name: value for name, value in metrics.items() if not name.endswith(TIMING_SUFFIX)}


def largest_difference(recorded: dict, measured: dict) -> float:
    """The largest absolute difference over all jobs and metrics; inf when jobs or metrics differ."""
    if recorded.keys() != measured.keys():
        return float("inf")
    worst = 0.0
    for key in recorded:
        old, new = compared(recorded[key]), compared(measured[key])
        if old.keys() != new.keys():
            return float("inf")
        worst = max([worst, *(abs(value - new[name]) for name, value in old.items())])
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--record", type=Path, help="write the numbers to this JSON file")
    action.add_argument("--check", type=Path, help="compare the numbers with this recorded JSON file")
    parser.add_argument("--save", type=Path, help="with --check: also write the numbers to this file")
    parser.add_argument(
        "--dlab",
        default=str(Path(sys.executable).with_name("dlab")),
        help="the command that runs dlab (default: the dlab beside this Python)",
    )
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest accepted difference")
    parser.add_argument("--only", nargs="*", default=list(SLICES), help="studies to run (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.only) - SLICES.keys())
    if unknown:
        parser.error(f"unknown studies {', '.join(unknown)}; known: {', '.join(SLICES)}")
    recorded = json.loads(args.check.read_text()) if args.check else {}
    results, failed = {}, False
    with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
        for study in args.only:
            started = time.monotonic()
            out, teachers = Path(scratch) / study, Path(scratch) / "teachers"
            jobs = run_study(shlex.split(args.dlab), study, SLICES[study], out, teachers)
            results[study] = jobs
            line = f"{study:20s} {len(jobs):3d} jobs  {time.monotonic() - started:6.1f}s"
            if args.check:
                if study not in recorded:
                    line += "  not recorded"
                    failed = True
                else:
                    worst = largest_difference(recorded[study], jobs)
                    failed |= worst > args.tolerance
                    line += f"  largest difference {worst:.3g}" + (
                        "" if worst <= args.tolerance else "  DIFFERS"
                    )
            print(line, flush=True)
    for path in (args.record, args.save):
        if path:
            path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
            print(f"recorded {sum(len(j) for j in results.values())} jobs in {path}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
