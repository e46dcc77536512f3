"""``dlab-report``: turn a finished sweep folder into a table and plots, without W&B.

The sweep's jobs are read and grouped by :mod:`divergence_lab.report.collect` (mean ± sample std over
seeds, one row per grid point); the command prints the table, then writes into the sweep folder
``report.md`` and ``report.csv`` (:mod:`divergence_lab.report.tables`), ``report.png`` (one bar chart per
metric, error bars = std) and ``report_reliability.png`` (:mod:`divergence_lab.report.plots`),
``report_curves.png`` (:mod:`divergence_lab.report.curves`) and ``report_lines.png``
(:mod:`divergence_lab.report.lines`), each figure when the jobs left what it needs. Given a study folder
holding several sweeps (``outputs/sweeps/<study>/``), the latest sweep is reported. ``--wandb
ENTITY/PROJECT`` also lists the sweep's runs as W&B has them (online).

Careless input (a missing path, a ``--metrics`` name no run recorded, a report file that cannot be
written ...) is refused with exit code 2 and one line on stderr, before any report file is touched.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn

from divergence_lab.report.collect import (
    SweepReport,
    check_metrics,
    collect,
    find_sweep,
    read_sweep_config,
    sweep_metrics,
)
from divergence_lab.report.curves import write_curve_grid
from divergence_lab.report.errors import ReportError, error_reason, one_line
from divergence_lab.report.lines import write_line_plot
from divergence_lab.report.plots import write_plot, write_reliability_grid
from divergence_lab.report.tables import print_table, write_csv, write_markdown

REFUSED = 2  # exit code of a refused input
REPORT_FILES = (
    "report.md",
    "report.csv",
    "report.png",
    "report_reliability.png",
    "report_curves.png",
    "report_lines.png",
)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(REFUSED, f"{self.prog}: error: {one_line(message)}\n")


def _path_argument(value: str) -> Path:
    if not value.strip():
        raise argparse.ArgumentTypeError("empty path (expected a sweep or study folder)")
    return Path(value)


def _metric_argument(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError(f"empty metric name (got {value!r})")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``dlab-report``; its errors are one line (see :class:`OneLineParser`)."""
    parser = OneLineParser(prog="dlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path", type=_path_argument, help="a sweep folder, or a study folder (its latest sweep is used)"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        type=_metric_argument,
        help="metrics to summarise (default: the sweep config's report.metrics, else test/acc test/ece)",
    )
    parser.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        help="also list this sweep's runs as W&B has them (online; the W&B group is <study>/<sweep folder>)",
    )
    return parser


def check_writable(sweep_dir: Path) -> None:
    """Refuse (:class:`ReportError`) a sweep folder where the report files cannot be written."""
    for name in REPORT_FILES:
        target = sweep_dir / name
        if target.exists() and not target.is_file():
            raise ReportError(f"cannot write {target}: it exists and is not a file")
        if target.exists() and not os.access(target, os.W_OK):
            raise ReportError(f"cannot write {target}: permission denied")
    if not os.access(sweep_dir, os.W_OK):
        raise ReportError(f"cannot write the report in {sweep_dir}: the folder is not writable")


def prepare(path: Path, metrics: list[str] | None) -> SweepReport:
    """Find and read the sweep, and check what was asked of it; nothing is written yet.

    Raises :class:`ReportError` or :class:`FileNotFoundError` (one-line messages) for careless input.
    """
    sweep_dir = find_sweep(path)
    read_sweep_config(sweep_dir)  # refuses an unreadable multirun.yaml before anything else parses it
    report = collect(sweep_dir, metrics or sweep_metrics(sweep_dir))
    if metrics:
        check_metrics(report, metrics)
    check_writable(sweep_dir)
    return report


def write_report(report: SweepReport) -> list[str]:
    """Write the report files in the sweep folder; return their names."""
    sweep_dir = report.sweep_dir
    written = ["report.md", "report.csv", "report.png"]
    if write_reliability_grid(report, sweep_dir / "report_reliability.png"):
        written.append("report_reliability.png")
    groups = [(group.label(report.varying), group.jobs) for group in report.groups]
    if write_curve_grid(groups, sweep_dir / "report_curves.png") is not None:
        written.append("report_curves.png")
    if write_line_plot(report, sweep_dir / "report_lines.png") is not None:
        written.append("report_lines.png")
    write_markdown(report, sweep_dir / "report.md")
    write_csv(report, sweep_dir / "report.csv")
    write_plot(report, sweep_dir / "report.png")
    return written


def _refuse(message: object) -> int:
    print(f"dlab-report: error: {one_line(message)}", file=sys.stderr)
    return REFUSED


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dlab-report``; returns the exit code (2 for a refused input)."""
    args = build_parser().parse_args(argv)
    try:
        report = prepare(args.path, args.metrics)
    except (FileNotFoundError, ReportError) as error:
        return _refuse(error)
    print_table(report)
    try:
        written = write_report(report)
    except OSError as error:
        return _refuse(f"cannot write the report in {report.sweep_dir}: {error_reason(error)}")
    print(f"wrote {', '.join(written)} in {report.sweep_dir}")
    if args.wandb:
        print_wandb_runs(args.wandb, report.sweep_dir)
    return 0


def print_wandb_runs(project_path: str, sweep_dir: Path) -> None:
    """The sweep's W&B runs (state and the reported summary metrics), fetched from the W&B API."""
    from divergence_lab.report.wandb_files import fetch_sweep_runs

    config = read_sweep_config(sweep_dir)
    group = f"{config.get('study', sweep_dir.parent.name)}/{sweep_dir.name}"
    metrics = sweep_metrics(sweep_dir)
    runs = fetch_sweep_runs(project_path, group)
    print(f"W&B {project_path}, group {group}: {len(runs)} run(s)")
    for run in runs:
        values = "  ".join(f"{m}={run['summary'][m]:.4f}" for m in metrics if m in run["summary"])
        print(f"  {run['name']}  [{run['state']}]  {values}")


if __name__ == "__main__":
    sys.exit(main())
