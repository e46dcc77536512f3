"""The report as text: ``report.md``, ``report.csv`` and the table printed on the terminal."""

from __future__ import annotations

import csv
from pathlib import Path

from divergence_lab.report.collect import SweepReport


def write_markdown(report: SweepReport, path: Path) -> None:
    """``report.md``: the table, the sweep's progress, and the figures already written beside it."""
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
    """``report.csv``: one row per group, a mean and a std column per metric (empty where none recorded)."""
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


def print_table(report: SweepReport) -> None:
    """The table on the terminal (never wrapped), then the sweep's progress lines."""
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
