"""``dlab-report``: turn a sweep folder into the tables, statistics and figures that say which divergence
(or any swept setting) did better, without W&B.

The sweep's jobs are read and grouped by :mod:`divergence_lab.report.collect` (one group per grid point,
seeds pooled); :mod:`divergence_lab.report.comparison` compares every group with its baseline group
(``--baseline``, else the study's ``report.baseline``, else the first group) paired by seed, with 95 %
intervals, paired t-tests and ranks; :mod:`divergence_lab.report.provenance` says what was held fixed,
what varied, which code and teachers ran and for how long. The command prints the tables, then writes
into the sweep folder ``report.md``, ``report.csv`` and ``report_seeds.csv``
(:mod:`divergence_lab.report.tables`), the figures, each when the jobs left what it needs, and the same
tables as a self-contained ``report.html`` (:mod:`divergence_lab.report.html_report`) and a LaTeX
``report.tex`` (:mod:`divergence_lab.report.latex_table`). Given a
study folder holding several sweeps (``outputs/sweeps/<study>/``), the latest sweep is reported.
``--wandb ENTITY/PROJECT`` also lists the sweep's runs as W&B has them (online).

Careless input (a missing path, a ``--metrics`` name no run recorded, a report file that cannot be
written ...) is refused with exit code 2 and one line on stderr, before any report file is touched.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from divergence_lab.ground.wandb_login import NOT_LOGGED_IN, wandb_logged_in
from divergence_lab.report.across_datasets_section import across_datasets_lines
from divergence_lab.report.cd_diagram import write_cd_diagram
from divergence_lab.report.collect import (
    SweepReport,
    check_metrics,
    collect_sweeps,
    declared_baseline,
    find_sweep,
    is_search,
    merged_display_names,
    read_sweep_config,
    report_section,
    sweep_metrics,
)
from divergence_lab.report.comparison import Baseline, MetricComparison, compare, resolve_baseline
from divergence_lab.report.confusion import per_class_lines, write_confusion_grid
from divergence_lab.report.curves import write_curves
from divergence_lab.report.errors import ReportError, error_reason, one_line
from divergence_lab.report.forest import write_forest_plot
from divergence_lab.report.frontier import (
    FRONTIER_FILE,
    FrontierSpec,
    frontier_answer_lines,
    frontier_lines,
    frontier_spec,
    write_frontier,
)
from divergence_lab.report.html_report import write_html
from divergence_lab.report.latex_table import write_latex
from divergence_lab.report.lines import write_line_plot
from divergence_lab.report.plots import write_plot
from divergence_lab.report.provenance import collect_provenance
from divergence_lab.report.reliability import write_reliability_grid
from divergence_lab.report.search import search_lines
from divergence_lab.report.statistics import CORRECTIONS, TESTS, Settings
from divergence_lab.report.tables import (
    number,
    print_main_table,
    print_report,
    write_csv,
    write_markdown,
    write_seed_csv,
)
from divergence_lab.report.testing import settings_for
from divergence_lab.report.wandb_view_content import parse_project_path, wandb_group
from divergence_lab.report.wandb_views import check_view_options, publish_views

REFUSED = 2  # exit code of a refused input
REPORT_FILES = (
    "report.md",
    "report.csv",
    "report_seeds.csv",
    "report.html",
    "report.tex",
    "report.png",
    "report_forest.png",
    "report_reliability.png",
    "report_curves.png",
    "report_lines.png",
    FRONTIER_FILE,
    "report_cd.png",
    "report_confusion.png",
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
        "path",
        nargs="+",
        type=_path_argument,
        help="a sweep folder, or a study folder (its latest sweep is used); several sweeps whose fixed "
        "settings agree are merged into one report (seeds pooled), written into the first one",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        type=_metric_argument,
        help="metrics to summarise (default: the sweep config's report.metrics, else test/acc test/ece)",
    )
    parser.add_argument(
        "--baseline",
        metavar="GROUP",
        help="compare every group with this one, paired by seed: a value of a swept key (kl), key=value "
        "(divergence=kl) or a display name (default: the study's report.baseline, else the first group)",
    )
    parser.add_argument(
        "--test",
        choices=TESTS,
        help="the paired test: t (paired t-test), wilcoxon (signed-rank), bootstrap (BCa bootstrap CI and a "
        "sign-flip permutation p-value, seeded) (default: the study's report.test, else t)",
    )
    parser.add_argument(
        "--correction",
        choices=list(CORRECTIONS),
        help="multiple-comparison correction over one metric's comparisons: holm, bh (Benjamini-Hochberg) "
        "or none (default: the study's report.correction, else holm)",
    )
    parser.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        help="also list this sweep's runs as W&B has them (online; the W&B group is <study>/<sweep folder>)",
    )
    parser.add_argument(
        "--wandb-view",
        metavar="ENTITY/PROJECT",
        help="also save a W&B workspace and a W&B report of this sweep's run group (curves, bars, the "
        "report's tables) and print their URLs; needs a W&B login and pip install "
        "'divergence_lab[wandb-views]'",
    )
    parser.add_argument(
        "--spec-only",
        metavar="FILE",
        type=Path,
        help="with or instead of --wandb-view: write the two views' specs as JSON into FILE, save nothing, "
        "no network (without --wandb-view, entity and project are the placeholders ENTITY/PROJECT)",
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


@dataclass
class PreparedReport:
    """A read sweep and what the report says about it; nothing written yet."""

    sweep: SweepReport
    baseline: Baseline | None
    comparisons: list[MetricComparison]
    frontier: FrontierSpec | None = None  # report.frontier, checked against the sweep
    settings: dict[str, Settings] = field(default_factory=dict)  # how each metric (and frontier y) is tested


def prepare(
    path: Path | Sequence[Path],
    metrics: list[str] | None,
    baseline: str | None = None,
    test: str | None = None,
    correction: str | None = None,
) -> PreparedReport:
    """Find and read the sweep, check what was asked of it and compare its groups; nothing is written yet.

    Raises :class:`ReportError` or :class:`FileNotFoundError` (one-line messages) for careless input.
    Several paths are merged into one report (:func:`~divergence_lab.report.collect.collect_sweeps`): the
    first sweep's config gives the defaults (metrics, baseline) and its folder receives the report.
    """
    sweep_dirs = [find_sweep(p) for p in ([path] if isinstance(path, Path) else path)]
    sweep_dir = sweep_dirs[0]
    for folder in sweep_dirs:
        read_sweep_config(folder)  # refuses an unreadable multirun.yaml before anything else parses it
    report = collect_sweeps(sweep_dirs, search_metrics(sweep_dir, metrics or sweep_metrics(sweep_dir)))
    report.display_names = merged_display_names(sweep_dirs)
    if metrics:
        check_metrics(report, metrics)
    spec = baseline if baseline is not None else declared_baseline(sweep_dir)
    # a search's trials are no grid: compare only with a baseline the user names
    chosen = None if spec is None and is_search(sweep_dir) else resolve_baseline(report, spec)
    frontier = frontier_spec(report_section(sweep_dir), report)
    tested = [*report.metrics, *(y for y in (frontier.ys if frontier else ()) if y not in report.metrics)]
    settings = settings_for(sweep_dir, tested, test, correction)
    check_writable(sweep_dir)
    comparisons = compare(report, chosen, settings, number)
    return PreparedReport(report, chosen, comparisons, frontier, settings)


def search_metrics(sweep_dir: Path, metrics: list[str]) -> list[str]:
    """A search's metrics with the validation metric it optimised first: its trials are ranked by what the
    search saw, never by a test metric."""
    optimized = read_sweep_config(sweep_dir).get("optimized_metric")
    if not is_search(sweep_dir) or not isinstance(optimized, str) or optimized in metrics:
        return metrics
    return [optimized, *metrics]


def write_report(prepared: PreparedReport) -> list[str]:
    """Write the report files in the sweep folder; return their names."""
    report = prepared.sweep
    sweep_dir = report.sweep_dir
    written = ["report.md", "report.csv", "report_seeds.csv", "report.png"]
    if write_reliability_grid(report, sweep_dir / "report_reliability.png"):
        written.append("report_reliability.png")
    if write_curves(report, sweep_dir / "report_curves.png"):
        written.append("report_curves.png")
    if write_line_plot(report, sweep_dir / "report_lines.png") is not None:
        written.append("report_lines.png")
    if write_frontier(report, prepared.frontier, sweep_dir / FRONTIER_FILE):  # report.frontier set
        written.append(FRONTIER_FILE)
    write_plot(report, prepared.comparisons, sweep_dir / "report.png")
    names = report.display_names
    if write_forest_plot(prepared.comparisons, prepared.baseline, names, sweep_dir / "report_forest.png"):
        written.append("report_forest.png")
    if write_cd_diagram(report, sweep_dir / "report_cd.png"):
        written.append("report_cd.png")
    if write_confusion_grid(report, sweep_dir / "report_confusion.png"):
        written.append("report_confusion.png")
    remove_stale_figures(sweep_dir, written)
    provenance = collect_provenance(*map(list, zip(*report.records, strict=True)))
    sections = [
        *search_lines(report),  # empty unless the sweep is a search
        *across_datasets_lines(report),
        *per_class_lines(report),
        *frontier_lines(report, prepared.frontier, prepared.baseline, prepared.settings),
    ]  # the frontier's lines are empty without report.frontier
    answer = frontier_answer_lines(report, prepared.frontier, prepared.baseline, prepared.settings)
    write_markdown(
        report, prepared.comparisons, prepared.baseline, provenance, sweep_dir / "report.md", sections, answer
    )
    write_csv(report, prepared.comparisons, sweep_dir / "report.csv")
    write_seed_csv(report, prepared.comparisons, sweep_dir / "report_seeds.csv")
    # last: the page embeds every figure written above
    write_html(
        report, prepared.comparisons, prepared.baseline, provenance, sweep_dir / "report.html", sections,
        answer,
    )  # fmt: skip
    write_latex(report, prepared.comparisons, prepared.baseline, sweep_dir / "report.tex")
    written += ["report.html", "report.tex"]
    return written


def remove_stale_figures(sweep_dir: Path, written: list[str]) -> None:
    """Remove the figures an earlier report wrote that this one did not (they would describe other runs)."""
    for name in REPORT_FILES:
        if name.endswith(".png") and name not in written:
            (sweep_dir / name).unlink(missing_ok=True)


def _refuse(message: object) -> int:
    print(f"dlab-report: error: {one_line(message)}", file=sys.stderr)
    return REFUSED


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``dlab-report``; returns the exit code (2 for a refused input)."""
    args = build_parser().parse_args(argv)
    try:
        if args.wandb:
            check_wandb_access(args.wandb)
        views = check_view_options(args.wandb_view, args.spec_only)  # None without either option
        prepared = prepare(args.path, args.metrics, args.baseline, args.test, args.correction)
    except (FileNotFoundError, ReportError) as error:
        return _refuse(error)
    print_report(prepared.sweep, prepared.comparisons, prepared.baseline)
    try:
        written = write_report(prepared)
    except OSError as error:
        return _refuse(f"cannot write the report in {prepared.sweep.sweep_dir}: {error_reason(error)}")
    print(f"wrote {', '.join(written)} in {prepared.sweep.sweep_dir}")
    if args.wandb:
        try:
            print_wandb_runs(args.wandb, prepared.sweep.sweep_dir)
        except Exception as error:  # the W&B API's errors have no common base (HTTP, auth, value errors)
            return _refuse(
                f"--wandb {args.wandb}: the report was written, W&B's runs could not be listed: "
                f"{error_reason(error)}"
            )
    if views is not None:
        try:
            print("\n".join(publish_views(prepared.sweep, views)))
        except ReportError as error:
            return _refuse(error)
    return 0


def report_at_sweep_end(sweep_dir: Path) -> str:
    """Write the report of a finished sweep, print its main table; return where the report is.

    Called when ``dlab -m`` ends; a sweep that cannot be reported (no job finished ...) gets one line why.
    """
    try:
        prepared = prepare(sweep_dir, None)
        print_main_table(prepared.sweep, prepared.comparisons)
        write_report(prepared)
    except (FileNotFoundError, ReportError, OSError) as error:
        return f"no report for {sweep_dir}: {one_line(error)}"
    return f"Report (statistics, provenance, figures): {prepared.sweep.sweep_dir / 'report.md'}"


def check_wandb_access(project_path: str) -> None:
    """Refuse (:class:`ReportError`) a ``--wandb`` path that is not ENTITY/PROJECT, or no W&B login."""
    parse_project_path(project_path, "--wandb")
    if not wandb_logged_in():
        raise ReportError(f"--wandb {project_path}: {NOT_LOGGED_IN}; nothing written")


def print_wandb_runs(project_path: str, sweep_dir: Path) -> None:
    """The sweep's W&B runs (state and the reported summary metrics), fetched from the W&B API."""
    from divergence_lab.report.wandb_files import fetch_sweep_runs

    group = wandb_group(sweep_dir)
    metrics = sweep_metrics(sweep_dir)
    runs = fetch_sweep_runs(project_path, group)
    print(f"W&B {project_path}, group {group}: {len(runs)} run(s)")
    for run in runs:
        values = "  ".join(f"{m}={run['summary'][m]:.4f}" for m in metrics if m in run["summary"])
        print(f"  {run['name']}  [{run['state']}]  {values}")


if __name__ == "__main__":
    sys.exit(main())
