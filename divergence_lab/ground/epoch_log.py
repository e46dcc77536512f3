"""A run's per-epoch metrics as its Lightning CSV log holds them (``<run>/csv/metrics.csv``).

A resumed run leaves the CSV of each earlier attempt as ``csv/metrics.attempt-<k>.csv``; the attempts are
merged in order (``k`` = 0, 1, ..., then ``metrics.csv``), a later attempt's value of a metric replacing an
earlier one's for the same epoch. Lightning's ``epoch`` column is the 0-based index of the epoch; here
epochs are counted from 1 (epoch e = the state after e epochs of training), as the progress lines, W&B and
the report count them. A metric logged per step and per epoch is read under its name without Lightning's
``_epoch`` suffix (the epoch mean).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

CSV_DIR = "csv"
CSV_FILE = "metrics.csv"
ATTEMPT_FILE = re.compile(r"metrics\.attempt-(\d+)\.csv")
NOT_METRICS = ("epoch", "step")
EPOCH_SUFFIX = "_epoch"  # Lightning's name for the epoch mean of a term also logged per step

EpochValues = dict[int, float]  # epoch (counted from 1) -> value


def csv_files(job: Path) -> list[Path]:
    """The job's CSV logs, oldest first: ``metrics.attempt-<k>.csv`` by increasing k, then ``metrics.csv``."""
    folder = job / CSV_DIR
    if not folder.is_dir():
        return []
    attempts = [(int(m.group(1)), p) for p in folder.iterdir() if (m := ATTEMPT_FILE.fullmatch(p.name))]
    current = [folder / CSV_FILE] if (folder / CSV_FILE).is_file() else []
    return [path for _, path in sorted(attempts)] + current


def read_csv_log(path: Path) -> dict[str, EpochValues]:
    """Every metric of one Lightning CSV log by epoch (the last value logged in an epoch); empty when the
    file cannot be read. Cells that are empty or not numbers are skipped."""
    metrics: dict[str, EpochValues] = {}
    try:
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                epoch = _number(row.get("epoch"))
                if epoch is None:
                    continue
                for name, cell in row.items():
                    value = _number(cell) if isinstance(name, str) and name not in NOT_METRICS else None
                    if value is not None:
                        metrics.setdefault(name.removesuffix(EPOCH_SUFFIX), {})[int(epoch) + 1] = value
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return metrics


def _number(cell: object) -> float | None:
    if not isinstance(cell, str) or not cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_epoch_metrics(job: Path) -> dict[str, EpochValues]:
    """The job's per-epoch metrics, its attempts merged: a later attempt's value wins for an epoch."""
    merged: dict[str, EpochValues] = {}
    for path in csv_files(job):
        for metric, values in read_csv_log(path).items():
            merged.setdefault(metric, {}).update(values)
    return merged
