"""Which group is better, per metric: summaries, paired differences against a baseline, and ranks.

The baseline is one value of one varying key (``--baseline kl``, ``--baseline divergence=kl``; default: the
study's ``report.baseline``, else the first group's value of the first varying key). Every group is
compared with the baseline group that shares its other varying values: in a ``divergence × temperature``
sweep ``--baseline kl`` compares ``js, T=4`` with ``kl, T=4``, never with ``kl, T=1``. A group whose
counterpart did not finish gets no difference, and the table says so. The statistics are in
:mod:`divergence_lab.report.statistics`.
"""

from __future__ import annotations

from dataclasses import dataclass

from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.errors import ReportError
from divergence_lab.report.metric_info import direction
from divergence_lab.report.statistics import (
    PairedDifference,
    Rank,
    Summary,
    paired_difference,
    rank,
    summarise,
)


@dataclass(frozen=True)
class Baseline:
    """The baseline: ``key = value`` among the varying override keys."""

    key: str
    value: str

    def describe(self, display_names: dict[str, str]) -> str:
        return display_names.get(self.value, f"{self.key}={self.value}")


@dataclass
class GroupRow:
    """One group's numbers for one metric."""

    group: Group
    label: str
    summary: Summary | None
    per_seed: dict[int, float]
    is_baseline: bool
    difference: PairedDifference | None  # None for the baseline itself, or without a counterpart
    counterpart_missing: bool
    rank: Rank | None


@dataclass
class MetricComparison:
    metric: str
    direction: int
    rows: list[GroupRow]

    @property
    def best(self) -> GroupRow | None:
        return next((row for row in self.rows if row.rank is not None and row.rank.position == 1), None)


def resolve_baseline(report: SweepReport, spec: str | None) -> Baseline | None:
    """The baseline ``spec`` names (``value``, ``key=value`` or a display name); None without varying keys.

    Raises :class:`ReportError` when ``spec`` names no value of a varying key, or values of several keys.
    """
    if not report.varying:
        return None
    if spec is None:
        first = dict(report.groups[0].key)
        key = report.varying[0]
        return Baseline(key, first[key]) if key in first else None
    names = {shown: value for value, shown in report.display_names.items()}
    value = names.get(spec, spec)
    key, sep, rest = value.partition("=")
    values = {k: {dict(g.key).get(k) for g in report.groups} for k in report.varying}
    if sep and key in values and rest in values[key]:
        return Baseline(key, rest)
    keys = [k for k in report.varying if value in values[k]]
    if len(keys) == 1:
        return Baseline(keys[0], value)
    choices = sorted({f"{k}={v}" for k in report.varying for v in values[k] if v is not None})
    if keys:
        raise ReportError(
            f"--baseline {spec!r} is a value of several varying keys ({', '.join(keys)}); "
            f"name one as key=value: {', '.join(choices)}"
        )
    raise ReportError(
        f"--baseline {spec!r} is no group of {report.sweep_dir}; choose one of: {', '.join(choices)}"
    )


def _counterpart(group: Group, baseline: Baseline, groups: list[Group], varying: list[str]) -> Group | None:
    """The baseline group sharing ``group``'s values of the other varying keys."""
    wanted = {k: v for k, v in group.key if k in varying}
    wanted[baseline.key] = baseline.value
    for candidate in groups:
        if {k: v for k, v in candidate.key if k in varying} == wanted:
            return candidate
    return None


def compare(report: SweepReport, baseline: Baseline | None) -> list[MetricComparison]:
    """Per metric: every group's summary, its paired difference with its baseline group, and its rank."""
    comparisons = []
    for metric in report.metrics:
        summaries = {id(g): summarise(g.values[metric]) for g in report.groups if g.values.get(metric)}
        ranks = rank({str(k): v for k, v in summaries.items()}, direction(metric))
        rows = []
        for group in report.groups:
            is_baseline = baseline is not None and dict(group.key).get(baseline.key) == baseline.value
            counterpart = (
                _counterpart(group, baseline, report.groups, report.varying) if baseline is not None else None
            )
            difference = None
            if counterpart is not None and not is_baseline:
                difference = paired_difference(
                    group.per_seed.get(metric, {}), counterpart.per_seed.get(metric, {})
                )
            rows.append(
                GroupRow(
                    group=group,
                    label=report.label(group),
                    summary=summaries.get(id(group)),
                    per_seed=dict(sorted(group.per_seed.get(metric, {}).items())),
                    is_baseline=is_baseline,
                    difference=difference,
                    counterpart_missing=baseline is not None and not is_baseline and counterpart is None,
                    rank=ranks.get(str(id(group))),
                )
            )
        comparisons.append(MetricComparison(metric, direction(metric), rows))
    return comparisons
