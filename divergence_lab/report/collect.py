"""Read a sweep folder: find the sweep, read its jobs, and group them by their overrides minus the seed.

Every finished job folder holds ``metrics.json`` and ``.hydra/overrides.yaml``. Jobs are grouped by their
overrides minus ``seed`` (so a ``divergence × seed`` grid gives one group per divergence); each metric is
summarised as mean ± sample standard deviation over the group's seeds, and only the override keys that
vary across the sweep label the groups. Unfinished jobs are listed with their state
(:mod:`divergence_lab.report.job_status`), jobs whose files cannot be read as unreadable: none is dropped
silently. The sweep's ``multirun.yaml`` may name the metrics to report (``report.metrics``).

Several sweeps are reported as one by :func:`collect_sweeps` when the settings they held fixed agree
(:mod:`divergence_lab.report.merging`): groups of the same grid point are merged and their seeds pooled.
Their groups are keyed by the swept keys alone (an override every sweep held fixed, such as
``paths.output_root``, does not split a group). A seed of a group that ran in two of the sweeps counts once
when both runs recorded the same metrics (the same run, reported twice); different metrics for it refuse
the merge, naming the group, the seed and both job folders.
"""

from __future__ import annotations

import difflib
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from divergence_lab.ground.record_format import METRICS_FILE
from divergence_lab.report.errors import ReportError, UnreadableFile, error_reason
from divergence_lab.report.job_status import (
    UNFINISHED_STATES,
    UnfinishedJob,
    expected_job_count,
    unfinished_job,
)
from divergence_lab.report.merging import check_mergeable, read_sweep_settings, under

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
    sweeps: list[Path] = field(default_factory=list)  # the sweep folders read: several when merged

    def label(self, group: Group) -> str:
        """The group's label as tables and figures show it (display names applied)."""
        return group.label(self.varying, self.display_names)

    def progress_lines(self) -> list[str]:
        """One line on the sweep's progress, then one per unfinished job and per unreadable file."""
        finished = sum(len(group.jobs) for group in self.groups)
        counts = {state: sum(job.state == state for job in self.missing) for state in UNFINISHED_STATES}
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


def _group_key(
    overrides: list[str], seen_values: dict[str, set[str]], swept: Iterable[str] | None = None
) -> tuple[tuple[str, str], ...]:
    """The job's overrides minus the seed (and Hydra's own) as ``(key, value)`` pairs; notes each value.
    With ``swept`` (merged sweeps), only the overrides of those keys."""
    pairs = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in IGNORED_KEYS or key.startswith("hydra") or (swept is not None and not under(key, swept)):
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


@dataclass
class SweepJobs:
    """The job folders of a sweep, read: the finished ones (folder, ``metrics.json``, overrides), the
    unfinished ones and the files that cannot be read."""

    finished: list[tuple[Path, dict[str, Any], list[str]]] = field(default_factory=list)
    missing: list[UnfinishedJob] = field(default_factory=list)
    unreadable: list[UnreadableFile] = field(default_factory=list)


def read_jobs(sweep_dir: Path) -> SweepJobs:
    """Read every job folder of ``sweep_dir``; a job whose files cannot be read is listed as unreadable."""
    jobs = SweepJobs()
    for job in _job_dirs(sweep_dir):
        metrics_file = job / METRICS_FILE
        if not metrics_file.is_file():
            jobs.missing.append(unfinished_job(job))
            continue
        try:
            jobs.finished.append((job, read_record(metrics_file), _overrides(job)))
        except UnreadableFile as error:
            jobs.unreadable.append(error)
    return jobs


def _grouped(
    sweep_dirs: Sequence[Path],
    metrics: list[str],
    jobs: SweepJobs,
    expected: int | None,
    swept: Iterable[str] | None = None,
) -> SweepReport:
    """Group the finished ``jobs`` by their overrides minus the seed (only ``swept`` keys, when given)."""
    groups: dict[tuple, Group] = {}
    recorded: set[str] = set()
    records: list[tuple[Path, dict[str, Any]]] = []
    seen_values: dict[str, set[str]] = {}
    for job, record, overrides in jobs.finished:
        recorded |= recorded_metrics(record)
        records.append((job, record))
        key = _group_key(overrides, seen_values, swept)
        _add_run(groups.setdefault(key, Group(key)), job, record, metrics)
    if not groups:
        detail = f"; unreadable: {', '.join(str(f) for f in jobs.unreadable)}" if jobs.unreadable else ""
        where = ", ".join(str(sweep_dir) for sweep_dir in sweep_dirs)
        raise FileNotFoundError(f"no finished job (readable metrics.json) in {where}{detail}")
    varying = [key for key, values in seen_values.items() if len(values) > 1]
    return SweepReport(
        sweep_dirs[0],
        metrics,
        list(groups.values()),
        varying,
        jobs.missing,
        expected,
        jobs.unreadable,
        recorded,
        records=records,
        sweeps=list(sweep_dirs),
    )


def collect(sweep_dir: Path, metrics: list[str]) -> SweepReport:
    """Group the finished jobs of ``sweep_dir`` by their overrides minus the seed.

    A job whose files cannot be read is skipped and listed in ``SweepReport.unreadable``.
    """
    return _grouped([sweep_dir], metrics, read_jobs(sweep_dir), expected_job_count(sweep_dir))


def _group_name(key: tuple[tuple[str, str], ...]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key) or "the runs"


FirstRun = tuple[Path, Path, dict[str, Any]]  # the sweep, the job folder and the metrics of a seed's run


def _is_repeat(first: dict[tuple[Any, int], FirstRun], slot: tuple[Any, int], run: FirstRun) -> bool:
    """Whether ``run`` repeats, from another sweep, the first run of its ``(group key, seed)``; a repeat
    with other metrics raises :class:`ReportError`."""
    earlier = first.setdefault(slot, run)
    if earlier[0] == run[0]:
        return False
    if earlier[2] != run[2]:
        key, seed = slot
        raise ReportError(
            f"cannot merge: {_group_name(key)}, seed {seed} ran in both {earlier[1]} and {run[1]} with "
            f"different results; merge sweeps that ran other seeds, or report them apart"
        )
    return True


def pool_jobs(sweeps: Sequence[tuple[Path, SweepJobs]], swept: Iterable[str]) -> tuple[SweepJobs, int]:
    """The jobs of several sweeps as one, and how many were left out as repeats: a group's seed that ran
    in two sweeps counts once when both runs recorded the same metrics, else :class:`ReportError`."""
    pooled = SweepJobs()
    first: dict[tuple[Any, int], FirstRun] = {}  # (group key, seed) -> its first run
    repeats = 0
    for sweep_dir, jobs in sweeps:
        pooled.missing += jobs.missing
        pooled.unreadable += jobs.unreadable
        for job, record, overrides in jobs.finished:
            seed = record.get("seed")
            seeded = isinstance(seed, int) and not isinstance(
                seed, bool
            )  # a run without a seed never repeats
            slot = (_group_key(overrides, {}, swept), seed)
            if seeded and _is_repeat(first, slot, (sweep_dir, job, record["metrics"])):
                repeats += 1  # the same run, in both sweeps
                continue
            pooled.finished.append((job, record, overrides))
    return pooled, repeats


def collect_sweeps(sweep_dirs: Sequence[Path], metrics: list[str]) -> SweepReport:
    """One report of several sweeps whose fixed settings agree (one sweep: :func:`collect`); a sweep given
    twice is read once. The report's ``sweep_dir`` (where its files go) is the first sweep's.

    Raises :class:`ReportError` (one line) for sweeps that cannot be merged: a search, fixed settings that
    differ (naming the keys), a seed of a group with different results in two sweeps.
    """
    unique: dict[Path, Path] = {}
    for sweep_dir in sweep_dirs:
        unique.setdefault(sweep_dir.resolve(), sweep_dir)
    dirs = list(unique.values())
    if len(dirs) == 1:
        return collect(dirs[0], metrics)
    for sweep_dir in dirs:
        if is_search(sweep_dir):
            raise ReportError(
                f"cannot merge {sweep_dir}: a hyperparameter search has no grid to pool its trials in"
            )
    swept = check_mergeable([read_sweep_settings(sweep_dir) for sweep_dir in dirs]) - set(IGNORED_KEYS)
    pooled, repeats = pool_jobs([(sweep_dir, read_jobs(sweep_dir)) for sweep_dir in dirs], swept)
    counts = [expected_job_count(sweep_dir) for sweep_dir in dirs]
    expected = None if None in counts else sum(count for count in counts if count is not None) - repeats
    return _grouped(dirs, metrics, pooled, expected, swept)


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


def merged_display_names(sweep_dirs: Sequence[Path]) -> dict[str, str]:
    """The display names of several sweeps' configs; the first sweep that names a value decides."""
    names: dict[str, str] = {}
    for sweep_dir in reversed(sweep_dirs):
        names.update(display_names(sweep_dir))
    return names


def is_search(sweep_dir: Path) -> bool:
    """Whether the sweep is a hyperparameter search (Optuna): its trials are not a grid to pair."""
    sweeper = (read_sweep_config(sweep_dir).get("hydra") or {}).get("sweeper") or {}
    return isinstance(sweeper, dict) and "optuna" in str(sweeper.get("_target_", "")).lower()


def declared_baseline(sweep_dir: Path) -> str | None:
    """``report.baseline`` of the sweep's config (a study's declared baseline), or None."""
    baseline = report_section(sweep_dir).get("baseline")
    return None if baseline is None else str(baseline)
