"""``dlab-report``: turn a finished sweep folder into a table and plots, without W&B.

Every job folder of a sweep holds ``metrics.json`` and ``.hydra/overrides.yaml``. Jobs are grouped by
their overrides minus ``seed`` (so a ``divergence × seed`` grid gives one row per divergence); each metric
is summarised as mean ± sample standard deviation over the group's seeds. Only the override keys that
vary across the sweep label the rows. Outputs, in the sweep folder: ``report.md``, ``report.csv`` and
``report.png`` (one bar chart per metric, error bars = std). The report works on a sweep that is still
running or that lost jobs: failed, running and not-yet-started jobs are listed (see ``sweep_status``),
never silently dropped. ``--wandb ENTITY/PROJECT`` also lists the sweep's runs as W&B has them (online).
A job whose ``metrics.json`` (or ``.hydra/overrides.yaml``) cannot be read is skipped and listed as
unreadable. Careless input (a missing path, a ``--metrics`` name no run recorded, a report file that cannot
be written ...) is refused with exit code 2 and one line on stderr, before any report file is touched.

Given a study folder holding several sweeps (``outputs/sweeps/<study>/``), the latest sweep is reported.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from divergence_lab.report.curves import write_curve_grid
from divergence_lab.report.lines import write_line_plot
from divergence_lab.sweep.status import UnfinishedJob, expected_job_count, unfinished_job

DEFAULT_METRICS = ("test/acc", "test/ece")
IGNORED_KEYS = ("seed",)
REFUSED = 2  # exit code of a refused input
REPORT_FILES = (
    "report.md",
    "report.csv",
    "report.png",
    "report_reliability.png",
    "report_curves.png",
    "report_lines.png",
)


class ReportError(Exception):
    """A careless input the report refuses, shown as one line: ``dlab-report: error: <message>``."""


class UnreadableFile(Exception):
    """A job file (``metrics.json``, ``.hydra/overrides.yaml``) that cannot be read; the job is skipped."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} ({reason})")
        self.path = path
        self.reason = reason

    def describe(self) -> str:
        return f"unreadable: {self.path} ({self.reason})"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(REFUSED, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _reason(error: Exception) -> str:
    """``<exception type>: <message>`` on one line."""
    return f"{type(error).__name__}: {_one_line(error)}"


@dataclass
class Group:
    """The runs of one grid point: its label (varying overrides) and each metric's values over seeds."""

    key: tuple[tuple[str, str], ...]
    values: dict[str, list[float]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    jobs: list[Path] = field(default_factory=list)

    def label(self, varying: list[str]) -> str:
        parts = [f"{k}={v}" for k, v in self.key if k in varying]
        if len(varying) == 1 and parts:
            return parts[0].split("=", 1)[1]
        return ", ".join(parts) or "all runs"

    def summary(self, metric: str) -> tuple[float, float]:
        values = self.values.get(metric, [])
        if not values:
            return float("nan"), float("nan")
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class SweepReport:
    sweep_dir: Path
    metrics: list[str]
    groups: list[Group]
    varying: list[str]
    missing: list[UnfinishedJob]
    expected: int | None = None
    unreadable: list[UnreadableFile] = field(default_factory=list)
    recorded: set[str] = field(default_factory=set)  # every metric some readable run recorded

    def progress_lines(self) -> list[str]:
        """One line on the sweep's progress, then one per unfinished job and per unreadable file."""
        finished = sum(len(group.jobs) for group in self.groups)
        counts = {
            state: sum(job.state == state for job in self.missing)
            for state in ("starting", "running", "failed")
        }
        counts["unreadable"] = len(self.unreadable)
        if self.expected is not None:
            accounted = finished + len(self.missing) + len(self.unreadable)
            counts["not started"] = max(self.expected - accounted, 0)
        if not any(counts.values()):
            return []
        summary = f"{finished} finished, " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        total = f" of {self.expected}" if self.expected is not None else ""
        return [
            f"Jobs{total}: {summary}",
            *(f"- {job.describe()}" for job in self.missing),
            *(f"- {file.describe()}" for file in self.unreadable),
        ]

    def rows(self) -> list[dict[str, str]]:
        header = " / ".join(self.varying) or "group"
        rows = []
        for group in self.groups:
            row = {header: group.label(self.varying), "n": str(len(group.seeds))}
            for metric in self.metrics:
                mean, std = group.summary(metric)
                row[metric] = f"{mean:.4f} ± {std:.4f}" if metric in group.values else "—"
            rows.append(row)
        return rows


def find_sweep(path: Path) -> Path:
    """``path`` itself when it is a sweep (holds job folders), else its most recent sweep subfolder."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a sweep or study folder)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory (expected a sweep or study folder)")
    if (path / "multirun.yaml").is_file() or any(path.glob("*/metrics.json")):
        return path
    sweeps = sorted(p.parent for p in path.glob("*/multirun.yaml"))
    if not sweeps:
        raise FileNotFoundError(f"no sweep found in {path} (expected job folders with metrics.json)")
    return sweeps[-1]


def _overrides(job_dir: Path) -> list[str]:
    """The job's command-line overrides; :class:`UnreadableFile` when the file is not a list of strings."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise UnreadableFile(path, _reason(error)) from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UnreadableFile(path, "expected a YAML list of key=value strings")
    return overrides


def read_record(path: Path) -> dict[str, Any]:
    """A job's ``metrics.json``; :class:`UnreadableFile` when it is not a JSON object with ``metrics``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise UnreadableFile(path, _reason(error)) from None
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise UnreadableFile(path, "expected a JSON object with a 'metrics' object")
    return record


def recorded_metrics(record: dict[str, Any]) -> set[str]:
    """The metrics a run recorded: its run metrics and the top-level numbers (such as ``wall_time_s``)."""
    top_level = {key for key, value in record.items() if _is_number(value) and key not in IGNORED_KEYS}
    return set(record["metrics"]) | top_level


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def _group_key(overrides: list[str], seen_values: dict[str, set[str]]) -> tuple[tuple[str, str], ...]:
    """The job's overrides minus the seed (and Hydra's own) as ``(key, value)`` pairs; notes each value."""
    pairs = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in IGNORED_KEYS or key.startswith("hydra"):
            continue
        pairs.append((key, value))
        seen_values.setdefault(key, set()).add(value)
    return tuple(pairs)


def _add_run(group: Group, job: Path, record: dict[str, Any], metrics: list[str]) -> None:
    group.seeds.append(record.get("seed"))
    group.jobs.append(job)
    for metric in metrics:  # a run metric, or a top-level number of metrics.json such as wall_time_s
        value = record["metrics"].get(metric, record.get(metric))
        if isinstance(value, int | float):
            group.values.setdefault(metric, []).append(float(value))


def collect(sweep_dir: Path, metrics: list[str]) -> SweepReport:
    """Group the finished jobs of ``sweep_dir`` by their overrides minus the seed.

    A job whose files cannot be read is skipped and listed in ``SweepReport.unreadable``.
    """
    groups: dict[tuple, Group] = {}
    missing: list[UnfinishedJob] = []
    unreadable: list[UnreadableFile] = []
    recorded: set[str] = set()
    seen_values: dict[str, set[str]] = {}
    for job in _job_dirs(sweep_dir):
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            missing.append(unfinished_job(job))
            continue
        try:
            record, overrides = read_record(metrics_file), _overrides(job)
        except UnreadableFile as error:
            unreadable.append(error)
            continue
        recorded |= recorded_metrics(record)
        key = _group_key(overrides, seen_values)
        _add_run(groups.setdefault(key, Group(key)), job, record, metrics)
    if not groups:
        detail = f"; unreadable: {', '.join(str(f) for f in unreadable)}" if unreadable else ""
        raise FileNotFoundError(f"no finished job (readable metrics.json) in {sweep_dir}{detail}")
    varying = [key for key, values in seen_values.items() if len(values) > 1]
    return SweepReport(
        sweep_dir,
        metrics,
        list(groups.values()),
        varying,
        missing,
        expected_job_count(sweep_dir),
        unreadable,
        recorded,
    )


def check_metrics(report: SweepReport, requested: list[str]) -> None:
    """Refuse (:class:`ReportError`) ``--metrics`` names that no readable run of the sweep recorded."""
    unknown = [name for name in requested if name not in report.recorded]
    if not unknown:
        return
    recorded = sorted(report.recorded)
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name, recorded, n=1)
        described.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ReportError(
        f"--metrics: no run of {report.sweep_dir} recorded {', '.join(described)}; "
        f"recorded metrics: {', '.join(recorded) or 'none'}"
    )


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


def read_sweep_config(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's ``multirun.yaml`` (empty without one); :class:`ReportError` when it cannot be read."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ReportError(f"cannot read {path}: {_reason(error)}") from None
    if not isinstance(config, dict):
        raise ReportError(f"cannot read {path}: expected a YAML mapping (Hydra's multirun config)")
    return config


def sweep_metrics(sweep_dir: Path) -> list[str]:
    """The metrics the sweep's config asks to report (``report.metrics``), else the defaults."""
    section = read_sweep_config(sweep_dir).get("report") or {}
    metrics = section.get("metrics") if isinstance(section, dict) else None
    if isinstance(metrics, list) and metrics:
        return [str(metric) for metric in metrics]
    return list(DEFAULT_METRICS)


def pooled_reliability(group: Group) -> dict[str, dict[str, list[float] | float]]:
    """Reliability bins of each evaluated network, pooled over the group's seeds (``reliability.json``).

    Pooling sums the counts and count-weights the per-bin confidence and accuracy; the ECE shown is that
    of the pooled predictions.
    """
    pooled: dict[str, dict] = {}
    for job in group.jobs:
        path = job / "reliability.json"
        if not path.is_file():
            continue
        for network, bins in json.loads(path.read_text()).items():
            entry = pooled.setdefault(
                network,
                {
                    "edges": bins["edges"],
                    "count": [0] * len(bins["count"]),
                    "conf": [0.0] * len(bins["count"]),
                    "acc": [0.0] * len(bins["count"]),
                },
            )
            for b, n in enumerate(bins["count"]):
                entry["count"][b] += n
                entry["conf"][b] += n * bins["confidence"][b]
                entry["acc"][b] += n * bins["accuracy"][b]
    for entry in pooled.values():
        total = sum(entry["count"]) or 1
        entry["ece"] = sum(abs(a - c) for a, c in zip(entry["acc"], entry["conf"], strict=True)) / total
        entry["confidence"] = [
            c / n if n else float("nan") for c, n in zip(entry["conf"], entry["count"], strict=True)
        ]
        entry["accuracy"] = [
            a / n if n else float("nan") for a, n in zip(entry["acc"], entry["count"], strict=True)
        ]
    return pooled


def write_reliability_grid(report: SweepReport, path: Path) -> bool:
    """One reliability panel per group (all evaluated networks, pooled over seeds); False if no data."""
    curves = [(group.label(report.varying), pooled_reliability(group)) for group in report.groups]
    curves = [(label, pooled) for label, pooled in curves if pooled]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(4, len(curves))
    rows = -(-len(curves) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(curves) :]:
        ax.axis("off")
    for ax, (label, pooled) in zip(axes.flat, curves, strict=False):
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        for network, bins in pooled.items():
            points = [
                (c, a)
                for c, a, n in zip(bins["confidence"], bins["accuracy"], bins["count"], strict=True)
                if n
            ]
            ax.plot(*zip(*points, strict=True), "o-", markersize=3, label=f"{network}  ECE={bins['ece']:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1), title=label)
        ax.title.set_fontsize(8)
        ax.legend(loc="upper left", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("confidence")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.suptitle("reliability (15 bins, pooled over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_markdown(report: SweepReport, path: Path) -> None:
    rows = report.rows()
    header = list(rows[0])
    lines = [
        f"# Sweep report: `{report.sweep_dir}`",
        "",
        "mean ± sample std over seeds; n = number of finished seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row[c] for c in header) + " |" for row in rows]
    if progress := report.progress_lines():
        lines += ["", *progress]
    lines += ["", "![metrics](report.png)", ""]
    if (report.sweep_dir / "report_lines.png").is_file():
        lines += ["## Against the numeric sweep key", "", "![lines](report_lines.png)", ""]
    if (report.sweep_dir / "report_curves.png").is_file():
        lines += [
            "## Accuracy per epoch",
            "",
            "Mean over seeds, band = ± std.",
            "",
            "![curves](report_curves.png)",
            "",
        ]
    if (report.sweep_dir / "report_reliability.png").is_file():
        lines += [
            "## Reliability diagrams",
            "",
            "Pooled over seeds; per run: `<job>/reliability.png`.",
            "",
            "![reliability](report_reliability.png)",
            "",
        ]
    path.write_text("\n".join(lines))


def write_csv(report: SweepReport, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "n", *[f"{m} {s}" for m in report.metrics for s in ("mean", "std")]])
        for group in report.groups:
            stats = [
                v if metric in group.values else ""
                for metric in report.metrics
                for v in group.summary(metric)
            ]
            writer.writerow([group.label(report.varying), len(group.seeds), *stats])


def _bar_layout(report: SweepReport) -> tuple[list[str], list[str], dict[tuple[str, str], Group]]:
    """x categories (values of the last varying key), hues (the other varying keys), and the cell groups."""
    x_key = report.varying[-1] if report.varying else None
    categories: list[str] = []
    hues: list[str] = []
    cells: dict[tuple[str, str], Group] = {}
    for group in report.groups:
        values = dict(group.key)
        category = values.get(x_key, "all runs") if x_key else "all runs"
        hue = ", ".join(f"{k}={values[k]}" for k in report.varying[:-1] if k in values)
        categories += [category] if category not in categories else []
        hues += [hue] if hue not in hues else []
        cells[(category, hue)] = group
    return categories, hues, cells


def write_plot(report: SweepReport, path: Path) -> None:
    """Bar chart per metric (error bars = std); a second varying key becomes coloured, side-by-side bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    categories, hues, cells = _bar_layout(report)
    columns = min(3, len(report.metrics))
    rows = -(-len(report.metrics) // columns)
    width = max(4.0, 0.35 * len(categories) * len(hues) + 1.5)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(report.metrics) :]:
        ax.axis("off")
    bar = 0.8 / len(hues)
    for ax, metric in zip(axes.flat, report.metrics, strict=False):
        lows, highs = [], []
        for h, hue in enumerate(hues):
            stats = [
                cells[(c, hue)].summary(metric) if (c, hue) in cells else (float("nan"), 0.0)
                for c in categories
            ]
            means, stds = zip(*stats, strict=True)
            offsets = [i - 0.4 + bar * (h + 0.5) for i in range(len(categories))]
            ax.bar(offsets, means, width=bar, yerr=stds, capsize=3, alpha=0.85, label=hue or None)
            lows += [m - s for m, s in stats if m == m]
            highs += [m + s for m, s in stats if m == m]
        ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right")
        ax.set_title(metric)
        if lows and metric.endswith("acc"):
            ax.set_ylim(max(0.0, min(lows) - 0.03), min(1.0, max(highs) + 0.01))
        ax.grid(axis="y", alpha=0.3)
    if len(hues) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        f"{report.sweep_dir.parent.name}/{report.sweep_dir.name}  (mean ± std over seeds)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(report: SweepReport) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = report.rows()
    table = Table(caption="mean ± sample std over seeds; n = finished seeds")
    for column in rows[0]:
        table.add_column(column, justify="left" if column == list(rows[0])[0] else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row.values())
    # never wrap cells: the table is as wide as its content, whatever the terminal (or a log file) offers
    needed = sum(max(len(column), *(len(row[column]) for row in rows)) + 3 for column in rows[0]) + 1
    console = Console(width=max(needed, Console().width))
    console.print(f"[bold]Sweep[/bold] {report.sweep_dir}")
    console.print(table)
    for line in report.progress_lines():
        console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)


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
    print(f"dlab-report: error: {_one_line(message)}", file=sys.stderr)
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
        return _refuse(f"cannot write the report in {report.sweep_dir}: {_reason(error)}")
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
