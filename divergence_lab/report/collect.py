"""Read a sweep folder: find the sweep, read its jobs, and group them by their overrides minus the seed.

Every finished job folder holds ``metrics.json`` and ``.hydra/overrides.yaml``. Jobs are grouped by their
overrides minus ``seed`` (so a ``divergence × seed`` grid gives one group per divergence); each metric is
summarised as mean ± sample standard deviation over the group's seeds, and only the override keys that
vary across the sweep label the groups. Unfinished jobs are listed with their state
(:mod:`divergence_lab.sweep.status`), jobs whose files cannot be read as unreadable: none is dropped
silently. The sweep's ``multirun.yaml`` may name the metrics to report (``report.metrics``).
"""

from __future__ import annotations

import difflib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from divergence_lab.report.errors import ReportError, UnreadableFile, error_reason
from divergence_lab.run.record import METRICS_FILE
from divergence_lab.sweep.status import UnfinishedJob, expected_job_count, unfinished_job

DEFAULT_METRICS = ("test/acc", "test/ece")
IGNORED_KEYS = ("seed",)


@dataclass
class Group:
    """The runs of one grid point: its label (varying overrides) and each metric's values over seeds."""

    key: tuple[tuple[str, str], ...]
    values: dict[str, list[float]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    jobs: list[Path] = field(default_factory=list)
    per_seed: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> {seed: value}

    def label(self, varying: list[str], display_names: dict[str, str] | None = None) -> str:
        """The varying overrides: ``rkl`` for one varying key, ``k=v, k2=v2`` for several; a value with a
        display name (the study's ``report.display_names``) is shown by that name alone."""
        names = display_names or {}
        parts = [(k, v) for k, v in self.key if k in varying]
        if len(varying) == 1 and parts:
            return names.get(parts[0][1], parts[0][1])
        return ", ".join(names.get(v, f"{k}={v}") for k, v in parts) or "all runs"

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
    display_names: dict[str, str] = field(default_factory=dict)  # override value -> name shown
    records: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # finished job, metrics.json

    def label(self, group: Group) -> str:
        """The group's label as tables and figures show it (display names applied)."""
        return group.label(self.varying, self.display_names)

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


def find_sweep(path: Path) -> Path:
    """``path`` itself when it is a sweep (holds job folders), else its most recent sweep subfolder."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a sweep or study folder)")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a directory (expected a sweep or study folder)")
    if (path / "multirun.yaml").is_file() or any(path.glob(f"*/{METRICS_FILE}")):
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
        raise UnreadableFile(path, error_reason(error)) from None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UnreadableFile(path, "expected a YAML list of key=value strings")
    return overrides


def read_record(path: Path) -> dict[str, Any]:
    """A job's ``metrics.json``; :class:`UnreadableFile` when it is not a JSON object with ``metrics``."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise UnreadableFile(path, error_reason(error)) from None
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
    seed = record.get("seed")
    pairable = isinstance(seed, int) and not isinstance(seed, bool) and seed not in group.seeds
    group.seeds.append(seed)
    group.jobs.append(job)
    for metric in metrics:  # a run metric, or a top-level number of metrics.json such as wall_time_s
        value = record["metrics"].get(metric, record.get(metric))
        if _is_number(value):
            group.values.setdefault(metric, []).append(float(value))
            if pairable:  # a run without a seed, or a repeated seed, is summarised but never paired
                group.per_seed.setdefault(metric, {})[seed] = float(value)


def collect(sweep_dir: Path, metrics: list[str]) -> SweepReport:
    """Group the finished jobs of ``sweep_dir`` by their overrides minus the seed.

    A job whose files cannot be read is skipped and listed in ``SweepReport.unreadable``.
    """
    groups: dict[tuple, Group] = {}
    missing: list[UnfinishedJob] = []
    unreadable: list[UnreadableFile] = []
    recorded: set[str] = set()
    records: list[tuple[Path, dict[str, Any]]] = []
    seen_values: dict[str, set[str]] = {}
    for job in _job_dirs(sweep_dir):
        metrics_file = job / METRICS_FILE
        if not metrics_file.is_file():
            missing.append(unfinished_job(job))
            continue
        try:
            record, overrides = read_record(metrics_file), _overrides(job)
        except UnreadableFile as error:
            unreadable.append(error)
            continue
        recorded |= recorded_metrics(record)
        records.append((job, record))
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
        records=records,
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


def read_sweep_config(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's ``multirun.yaml`` (empty without one); :class:`ReportError` when it cannot be read."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ReportError(f"cannot read {path}: {error_reason(error)}") from None
    if not isinstance(config, dict):
        raise ReportError(f"cannot read {path}: expected a YAML mapping (Hydra's multirun config)")
    return config


def report_section(sweep_dir: Path) -> dict[str, Any]:
    """The ``report`` section of the sweep's config (empty when there is none)."""
    section = read_sweep_config(sweep_dir).get("report") or {}
    return section if isinstance(section, dict) else {}


def sweep_metrics(sweep_dir: Path) -> list[str]:
    """The metrics the sweep's config asks to report (``report.metrics``), else the defaults."""
    metrics = report_section(sweep_dir).get("metrics")
    if isinstance(metrics, list) and metrics:
        return [str(metric) for metric in metrics]
    return list(DEFAULT_METRICS)


def display_names(sweep_dir: Path) -> dict[str, str]:
    """``report.display_names`` of the sweep's config: override value -> the name tables and plots show."""
    names = report_section(sweep_dir).get("display_names") or {}
    return {str(k): str(v) for k, v in names.items()} if isinstance(names, dict) else {}


def is_search(sweep_dir: Path) -> bool:
    """Whether the sweep is a hyperparameter search (Optuna): its trials are not a grid to pair."""
    sweeper = (read_sweep_config(sweep_dir).get("hydra") or {}).get("sweeper") or {}
    return isinstance(sweeper, dict) and "optuna" in str(sweeper.get("_target_", "")).lower()


def declared_baseline(sweep_dir: Path) -> str | None:
    """``report.baseline`` of the sweep's config (a study's declared baseline), or None."""
    baseline = report_section(sweep_dir).get("baseline")
    return None if baseline is None else str(baseline)
