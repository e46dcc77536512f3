"""Where a sweep's numbers come from: the settings every run shared, the ones that varied, the teachers,
the code (commits, modified working trees), and how long the runs took.

Read from each finished job folder: ``fingerprint.json`` (the result-relevant settings, flattened; else
``config.yaml``), ``metrics.json`` (``git``, ``wall_time_s``, ``finished_at``, ``versions``, ``threads``)
and ``teacher.json`` (the teachers a distillation run used, with their test metrics). Nothing here imports
a deep-learning framework.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf.errors import OmegaConfBaseException

from divergence_lab.ground.record_format import TEACHER_FILE, read_teachers, stored_run_settings

SECTIONS = ("method", "teacher", "divergence", "data", "model", "trainer")  # shown first, in this order
TEACHER_PREFIX = "method.teacher."
# the teacher test metrics shown, by label: accuracy for classifiers, greedy exact match for language models
TEACHER_METRICS = {"test/acc": "test acc", "test/exact_match": "test exact match"}
HIDDEN_KEYS = ("seed",)  # varies by design: the report pairs over it
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def run_settings(job: Path) -> dict[str, Any]:
    """The job's result-relevant settings (``fingerprint.json``, else its ``config.yaml``; empty without)."""
    try:
        return stored_run_settings(job) or {}
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException):  # unreadable: nothing to show
        return {}


def _started_finished(record: dict[str, Any]) -> tuple[float, float] | None:
    try:
        finished = datetime.strptime(record["finished_at"], TIME_FORMAT).timestamp()
        return finished - float(record["wall_time_s"]), finished
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Provenance:
    """What the finished runs of a sweep share and where they differ."""

    runs: int
    common: dict[str, Any] = field(default_factory=dict)
    varying: dict[str, list[str]] = field(default_factory=dict)
    # a key only some runs have (a member's own parameter: Sinkhorn's epsilon), with one value among them
    partial: dict[str, tuple[Any, int]] = field(default_factory=dict)  # key -> (value, runs that have it)
    teachers: dict[str, dict[str, Any]] = field(default_factory=dict)  # cache key -> model, test metrics
    commits: Counter = field(default_factory=Counter)  # (commit, dirty) -> runs
    wall_times: list[float] = field(default_factory=list)
    span_s: float | None = None  # first start to last finish
    versions: Counter = field(default_factory=Counter)  # "torch 2.13.0, lightning 2.6" -> runs

    def settings_lines(self) -> list[str]:
        """One line per config section of the common settings: ``method: name=kd, alpha=0.9, ...``."""
        sections: dict[str, list[str]] = {}
        for key, value in self.common.items():
            if key.endswith("_target_") or key in HIDDEN_KEYS:
                continue
            if key.startswith(TEACHER_PREFIX):  # the teacher's own recipe, apart from the student's
                section, rest = "teacher", key.removeprefix(TEACHER_PREFIX)
            else:
                section, _, rest = key.partition(".")
            shown = rest or section
            sections.setdefault(section if rest else "run", []).append(f"{shown}={_show(value)}")
        ordered = [s for s in SECTIONS if s in sections] + [s for s in sections if s not in SECTIONS]
        return [f"{section}: {', '.join(sections[section])}" for section in ordered]

    def varying_lines(self) -> list[str]:
        return [
            f"{key}: {', '.join(values)}" for key, values in self.varying.items() if key not in HIDDEN_KEYS
        ]

    def partial_lines(self) -> list[str]:
        """``divergence.epsilon=0.1 (6 of 36 runs)``: a setting that applies to some runs only."""
        return [
            f"{key}={_show(value)} ({runs} of {self.runs} runs)"
            for key, (value, runs) in self.partial.items()
        ]

    def teacher_lines(self) -> list[str]:
        lines = []
        for key, teacher in self.teachers.items():
            metrics = teacher.get("test_metrics", {})
            recorded = [
                f"{label} {metrics[name]:.4f}"
                for name, label in TEACHER_METRICS.items()
                if isinstance(metrics.get(name), int | float)
            ]
            shown = ", ".join(recorded) or "test accuracy not recorded"
            lines.append(
                f"{teacher.get('model', '?')} (cache key {key}): {shown}, used by {teacher['runs']} run(s)"
            )
        return lines

    def code_lines(self) -> list[str]:
        lines = []
        for (commit, dirty), count in self.commits.most_common():
            state = {True: "with uncommitted changes", False: "clean", None: "state unknown"}[dirty]
            lines.append(f"{commit[:12] if commit else 'unknown commit'} ({state}): {count} run(s)")
        lines += [f"{versions}: {count} run(s)" for versions, count in self.versions.most_common()]
        return lines

    def time_lines(self) -> list[str]:
        if not self.wall_times:
            return []
        total = sum(self.wall_times)
        line = (
            f"{_duration(total)} of run time in all; per run {_duration(statistics.fmean(self.wall_times))} "
            f"on average ({_duration(min(self.wall_times))} to {_duration(max(self.wall_times))})"
        )
        if self.span_s is not None:
            line += f"; {_duration(self.span_s)} from the first start to the last finish"
        return [line]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def collect_provenance(jobs: list[Path], records: list[dict[str, Any]]) -> Provenance:
    """The provenance of the finished ``jobs`` (``records``: their ``metrics.json``, in the same order)."""
    settings = [run_settings(job) for job in jobs]
    keys = list(dict.fromkeys(key for s in settings for key in s))  # the config's own order
    provenance = Provenance(runs=len(jobs))
    for key in keys:
        having = [s[key] for s in settings if key in s]
        values = {json.dumps(value, sort_keys=True, default=str) for value in having}
        if len(values) == 1 and len(having) == len(settings):
            provenance.common[key] = having[0]
        elif len(values) == 1:
            provenance.partial[key] = (having[0], len(having))
        else:
            provenance.varying[key] = sorted(_show(json.loads(v)) for v in values)
    for job in jobs:
        for key, teacher in read_teachers(job / TEACHER_FILE).items():
            entry = provenance.teachers.setdefault(key, {**teacher, "runs": 0})
            entry["runs"] += 1
    spans = []
    for record in records:
        git = record.get("git") if isinstance(record.get("git"), dict) else {}
        provenance.commits[(git.get("commit"), git.get("dirty"))] += 1
        if isinstance(record.get("wall_time_s"), int | float):
            provenance.wall_times.append(float(record["wall_time_s"]))
        if isinstance(record.get("versions"), dict):
            provenance.versions[", ".join(f"{k} {v}" for k, v in sorted(record["versions"].items()))] += 1
        if (span := _started_finished(record)) is not None:
            spans.append(span)
    if spans:
        provenance.span_s = max(end for _, end in spans) - min(start for start, _ in spans)
    return provenance
