"""``dlab-report``: turn a finished sweep folder into a table and plots, without W&B.

Every job folder of a sweep holds ``metrics.json`` and ``.hydra/overrides.yaml``. Jobs are grouped by
their overrides minus ``seed`` (so a ``divergence × seed`` grid gives one row per divergence); each metric
is summarised as mean ± sample standard deviation over the group's seeds. Only the override keys that
vary across the sweep label the rows. Outputs, in the sweep folder: ``report.md``, ``report.csv`` and
``report.png`` (one bar chart per metric, error bars = std). The report works on a sweep that is still
running or that lost jobs: failed, running and not-yet-started jobs are listed (see ``sweep_status``),
never silently dropped. ``--wandb ENTITY/PROJECT`` also lists the sweep's runs as W&B has them (online).

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

from divergence_lab.report_curves import write_curve_grid
from divergence_lab.report_lines import write_line_plot
from divergence_lab.sweep_status import UnfinishedJob, expected_job_count, unfinished_job

DEFAULT_METRICS = ("test/acc", "test/ece")
IGNORED_KEYS = ("seed",)


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

    def progress_lines(self) -> list[str]:
        """One line on the sweep's progress, then one per unfinished job."""
        finished = sum(len(group.jobs) for group in self.groups)
        counts = {
            state: sum(job.state == state for job in self.missing)
            for state in ("starting", "running", "failed")
        }
        if self.expected is not None:
            counts["not started"] = max(self.expected - finished - len(self.missing), 0)
        if not any(counts.values()):
            return []
        summary = f"{finished} finished, " + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        total = f" of {self.expected}" if self.expected is not None else ""
        return [f"Jobs{total}: {summary}", *(f"- {job.describe()}" for job in self.missing)]

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
    missing: list[UnfinishedJob] = []
    seen_values: dict[str, set[str]] = {}
    for job in _job_dirs(sweep_dir):
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            missing.append(unfinished_job(job))
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
        group.jobs.append(job)
        for metric in metrics:  # a run metric, or a top-level number of metrics.json such as wall_time_s
            value = record["metrics"].get(metric, record.get(metric))
            if isinstance(value, int | float):
                group.values.setdefault(metric, []).append(float(value))
    if not groups:
        raise FileNotFoundError(f"no finished job (metrics.json) in {sweep_dir}")
    varying = [key for key, values in seen_values.items() if len(values) > 1]
    return SweepReport(
        sweep_dir, metrics, list(groups.values()), varying, missing, expected_job_count(sweep_dir)
    )


def sweep_metrics(sweep_dir: Path) -> list[str]:
    """The metrics the sweep's config asks to report (``report.metrics``), else the defaults."""
    config = sweep_dir / "multirun.yaml"
    if config.is_file():
        metrics = (yaml.safe_load(config.read_text()) or {}).get("report", {}).get("metrics")
        if metrics:
            return list(metrics)
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
        console.print(line, style="yellow", markup=False, highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dlab-report", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path", type=Path, help="a sweep folder, or a study folder (its latest sweep is used)"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        help="metrics to summarise (default: the sweep config's report.metrics, else test/acc test/ece)",
    )
    parser.add_argument(
        "--wandb",
        metavar="ENTITY/PROJECT",
        help="also list this sweep's runs as W&B has them (online; the W&B group is <study>/<sweep folder>)",
    )
    args = parser.parse_args(argv)
    try:
        sweep_dir = find_sweep(args.path)
        report = collect(sweep_dir, args.metrics or sweep_metrics(sweep_dir))
    except FileNotFoundError as error:
        print(f"dlab-report: error: {error}", file=sys.stderr)
        return 2
    print_table(report)
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
    print(f"wrote {', '.join(written)} in {sweep_dir}")
    if args.wandb:
        print_wandb_runs(args.wandb, sweep_dir)
    return 0


def print_wandb_runs(project_path: str, sweep_dir: Path) -> None:
    """The sweep's W&B runs (state and the reported summary metrics), fetched from the W&B API."""
    from divergence_lab.wandb_files import fetch_sweep_runs

    config = yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}
    group = f"{config.get('study', sweep_dir.parent.name)}/{sweep_dir.name}"
    metrics = sweep_metrics(sweep_dir)
    runs = fetch_sweep_runs(project_path, group)
    print(f"W&B {project_path}, group {group}: {len(runs)} run(s)")
    for run in runs:
        values = "  ".join(f"{m}={run['summary'][m]:.4f}" for m in metrics if m in run["summary"])
        print(f"  {run['name']}  [{run['state']}]  {values}")


if __name__ == "__main__":
    sys.exit(main())
