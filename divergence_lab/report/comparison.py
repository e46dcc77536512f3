"""Which group is better, per metric: summaries, paired differences against a baseline with corrected
p-values and verdicts, and ranks from paired tests.

The baseline is one value of one varying key (``--baseline kl``, ``--baseline divergence=kl``; default: the
study's ``report.baseline``, else the first group's value of the first varying key). Every group is
compared with the baseline group that shares its other varying values: in a ``divergence × temperature``
sweep ``--baseline kl`` compares ``js, T=4`` with ``kl, T=4``, never with ``kl, T=1``. A group whose
counterpart did not finish gets no difference, and the table says so. The comparisons of one metric
against the baseline are one family: their p-values are corrected together (Holm by default). The
statistics are in :mod:`divergence_lab.report.statistics`, the verdicts and ranks in
:mod:`divergence_lab.report.verdicts`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from divergence_lab.ground.ties import tied_best
from divergence_lab.report.collect import Group, SweepReport
from divergence_lab.report.errors import ReportError
from divergence_lab.report.metric_info import bounds, direction
from divergence_lab.report.statistics import (
    PairedDifference,
    Settings,
    Summary,
    correct,
    paired_difference,
    summarise,
)
from divergence_lab.report.verdicts import Rank, Verdict, paired_ranks, verdict


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
    verdict: Verdict | None = None  # None where there is no difference
    stratum: int = 0  # which set of groups it is ranked in (see :func:`strata`)


@dataclass
class MetricComparison:
    metric: str
    direction: int
    rows: list[GroupRow]
    settings: Settings = field(default_factory=Settings)

    @property
    def comparisons(self) -> int:
        """The size of the family corrected together: the groups with a difference to their baseline."""
        return sum(row.difference is not None for row in self.rows)

    def is_best(self, row: GroupRow) -> bool:
        """Whether ``row`` has the best mean of a metric with a direction among the several groups ranked
        with it (its stratum: the groups sharing its values of the other varying keys); ties are all best,
        by the rule that lists a search's tied trials in ``best.yaml`` (:func:`~divergence_lab.ground.ties.
        tied_best`)."""
        ranked = [r for r in self.rows if r.stratum == row.stratum and r.rank is not None and r.summary]
        if row.summary is None or row.rank is None or len(ranked) < 2:
            return False
        means = {id(r): r.summary.mean for r in ranked if r.summary is not None}
        return id(row) in tied_best(means, maximize=self.direction > 0)


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


def strata(report: SweepReport, baseline: Baseline | None) -> list[list[Group]]:
    """The sets of groups ranked among themselves: with a baseline, the groups that share the values of the
    other varying keys (the divergences of one dataset, of one temperature ...); else all groups."""
    if baseline is None:
        return [list(report.groups)]
    by_context: dict[tuple, list[Group]] = {}
    for group in report.groups:
        context = tuple((k, v) for k, v in group.key if k in report.varying and k != baseline.key)
        by_context.setdefault(context, []).append(group)
    return list(by_context.values())


def compare(
    report: SweepReport,
    baseline: Baseline | None,
    settings: dict[str, Settings] | None = None,
    shown: Callable[[float], str] = str,
) -> list[MetricComparison]:
    """Per metric: every group's summary, its paired difference with its baseline group (p-values
    corrected over the metric's family), its verdict and its rank. ``settings`` maps a metric to how it is
    tested (default :class:`Settings`); ``shown`` formats a metric value inside a verdict."""
    counterparts = {
        id(g): _counterpart(g, baseline, report.groups, report.varying) if baseline is not None else None
        for g in report.groups
    }
    is_baseline = {
        id(g): baseline is not None and dict(g.key).get(baseline.key) == baseline.value for g in report.groups
    }
    groups_strata = strata(report, baseline)
    stratum_of = {id(g): index for index, stratum in enumerate(groups_strata) for g in stratum}
    comparisons = []
    for metric in report.metrics:
        metric_settings = (settings or {}).get(metric, Settings())
        summaries = {
            id(g): summarise(g.values[metric], bounds(metric)) for g in report.groups if g.values.get(metric)
        }
        pairs = [
            (g.per_seed.get(metric, {}), counterparts[id(g)].per_seed.get(metric, {}))
            for g in report.groups
            if counterparts[id(g)] is not None and not is_baseline[id(g)]
        ]
        family = sum(1 for group, base in pairs if set(group) & set(base))
        differences = correct(
            [paired_difference(group, base, metric_settings, family) for group, base in pairs],
            metric_settings.correction,
        )
        ranks = {}
        for stratum in groups_strata:
            ranks |= paired_ranks(
                {str(id(g)): g.per_seed.get(metric, {}) for g in stratum if id(g) in summaries},
                {str(id(g)): summaries[id(g)].mean for g in stratum if id(g) in summaries},
                direction(metric),
                metric_settings,
            )
        rows = []
        found = iter(differences)
        for group in report.groups:
            counterpart = counterparts[id(group)]
            has_pair = counterpart is not None and not is_baseline[id(group)]
            difference = next(found) if has_pair else None
            rows.append(
                GroupRow(
                    group=group,
                    label=report.label(group),
                    summary=summaries.get(id(group)),
                    per_seed=dict(sorted(group.per_seed.get(metric, {}).items())),
                    is_baseline=is_baseline[id(group)],
                    difference=difference,
                    counterpart_missing=baseline is not None
                    and not is_baseline[id(group)]
                    and counterpart is None,
                    rank=ranks.get(str(id(group))),
                    stratum=stratum_of[id(group)],
                    verdict=None
                    if difference is None
                    else verdict(difference, direction(metric), metric_settings, shown),
                )
            )
        comparisons.append(MetricComparison(metric, direction(metric), rows, metric_settings))
    return comparisons
