"""``dlab-report``: turn a finished sweep folder into a table and plots, without W&B.

Every job folder of a sweep holds ``metrics.json`` and ``.hydra/overrides.yaml``. Jobs are grouped by
their overrides minus ``seed`` (so a ``divergence × seed`` grid gives one row per divergence); each metric
is summarised as mean ± sample standard deviation over the group's seeds. Only the override keys that
vary across the sweep label the rows. Outputs, in the sweep folder: ``report.md``, ``report.csv`` and
``report.png`` (one bar chart per metric, error bars = std). Jobs without ``metrics.json`` (failed or still
running) are counted and named, never silently dropped.

Given a study folder holding several sweeps (``outputs/sweeps/<study>/``), the latest sweep is reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_METRICS = ("test/acc", "test/ece")
IGNORED_KEYS = ("seed",)


@dataclass
class Group:
    """The runs of one grid point: its label (varying overrides) and each metric's values over seeds."""

    key: tuple[tuple[str, str], ...]
    values: dict[str, list[float]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)

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
    missing: list[Path]

    def rows(self) -> list[dict[str, str]]:
        header = " / ".join(self.varying) or "group"
        rows = []
        for group in self.groups:
            row = {header: group.label(self.varying), "n": str(len(group.seeds))}
            for metric in self.metrics:
                mean, std = group.summary(metric)
                row[metric] = f"{mean:.4f} ± {std:.4f}"
            rows.append(row)
        return rows


def find_sweep(path: Path) -> Path:
    """``path`` itself when it is a sweep (holds job folders), else its most recent sweep subfolder."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    if (path / "multirun.yaml").is_file() or any(path.glob("*/metrics.json")):
        return path
    sweeps = sorted(p.parent for p in path.glob("*/multirun.yaml"))
    if not sweeps:
        raise FileNotFoundError(f"no sweep found in {path} (expected job folders with metrics.json)")
    return sweeps[-1]


def _overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.is_file() else []


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def collect(sweep_dir: Path, metrics: list[str]) -> SweepReport:
    """Group the finished jobs of ``sweep_dir`` by their overrides minus the seed."""
    groups: dict[tuple, Group] = {}
    missing: list[Path] = []
    seen_values: dict[str, set[str]] = {}
    for job in _job_dirs(sweep_dir):
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            missing.append(job)
            continue
        record = json.loads(metrics_file.read_text())
        pairs = []
        for override in _overrides(job):
            key, _, value = override.lstrip("+~").partition("=")
            if key in IGNORED_KEYS or key.startswith("hydra"):
                continue
            pairs.append((key, value))
            seen_values.setdefault(key, set()).add(value)
        group = groups.setdefault(tuple(pairs), Group(tuple(pairs)))
        group.seeds.append(record.get("seed"))
        for metric in metrics:
            if metric in record["metrics"]:
                group.values.setdefault(metric, []).append(float(record["metrics"][metric]))
    if not groups:
        raise FileNotFoundError(f"no finished job (metrics.json) in {sweep_dir}")
    varying = [key for key, values in seen_values.items() if len(values) > 1]
    return SweepReport(sweep_dir, metrics, list(groups.values()), varying, missing)


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
    if report.missing:
        lines += ["", f"Unfinished jobs (no metrics.json): {', '.join(p.name for p in report.missing)}"]
    lines += ["", "![metrics](report.png)", ""]
    path.write_text("\n".join(lines))


def write_csv(report: SweepReport, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "n", *[f"{m} {s}" for m in report.metrics for s in ("mean", "std")]])
        for group in report.groups:
            stats = [v for metric in report.metrics for v in group.summary(metric)]
            writer.writerow([group.label(report.varying), len(group.seeds), *stats])


def write_plot(report: SweepReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [g.label(report.varying) for g in report.groups]
    fig, axes = plt.subplots(
        1,
        len(report.metrics),
        figsize=(max(4.0, 0.9 * len(labels)) * len(report.metrics), 3.8),
        squeeze=False,
    )
    for ax, metric in zip(axes[0], report.metrics, strict=True):
        means, stds = zip(*(g.summary(metric) for g in report.groups), strict=True)
        ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(metric)
        finite = [m for m in means if m == m]
        if finite and metric.endswith("acc"):
            low = min(m - s for m, s in zip(means, stds, strict=True) if m == m)
            ax.set_ylim(max(0.0, low - 0.05), min(1.0, max(finite) + 0.05) + 0.01)
        ax.grid(axis="y", alpha=0.3)
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
        table.add_column(column, justify="left" if column == list(rows[0])[0] else "right")
    for row in rows:
        table.add_row(*row.values())
    console = Console(width=max(100, Console().width))
    console.print(f"[bold]Sweep[/bold] {report.sweep_dir}")
    console.print(table)
    if report.missing:
        console.print(
            f"[yellow]{len(report.missing)} unfinished job(s): {', '.join(p.name for p in report.missing)}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path", type=Path, help="a sweep folder, or a study folder (its latest sweep is used)"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help="metrics to summarise (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        sweep_dir = find_sweep(args.path)
        report = collect(sweep_dir, args.metrics)
    except FileNotFoundError as error:
        print(f"dlab-report: error: {error}", file=sys.stderr)
        return 2
    print_table(report)
    write_markdown(report, sweep_dir / "report.md")
    write_csv(report, sweep_dir / "report.csv")
    write_plot(report, sweep_dir / "report.png")
    print(f"wrote {sweep_dir / 'report.md'}, report.csv, report.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
