"""How a report tests, per metric: from the command line (``--test``, ``--correction``) and the study's
``report`` section (``test``, ``correction``, ``alpha``, ``power``, and per metric ``equivalence_margin`` and
``effect_of_interest``, each a mapping ``{metric: value in the metric's units}``).

The command line wins over the study; the study over :class:`~divergence_lab.report.statistics.Settings`'s
defaults (paired t-test, Holm, α = 0.05, 80 % power). A value of the wrong kind is refused in one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from divergence_lab.report.errors import ReportError
from divergence_lab.report.statistics import CORRECTIONS, TESTS, Settings

PER_METRIC_KEYS = ("equivalence_margin", "effect_of_interest")


def _choice(
    section: dict[str, Any], key: str, choices: tuple[str, ...] | list[str], given: str | None
) -> str | None:
    value = given if given is not None else section.get(key)
    if value is not None and str(value) not in choices:
        raise ReportError(f"report.{key}: {value!r} is not one of {', '.join(choices)}")
    return None if value is None else str(value)


def _fraction(section: dict[str, Any], key: str) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ReportError(f"report.{key}: expected a number in (0, 1), got {value!r}")
    return float(value)


def _per_metric(section: dict[str, Any], key: str, metrics: list[str]) -> dict[str, float]:
    values = section.get(key) or {}
    if not isinstance(values, dict):
        raise ReportError(f"report.{key}: expected a mapping metric -> value (e.g. {{test/acc: 0.01}})")
    for metric, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise ReportError(f"report.{key}.{metric}: expected a positive number, got {value!r}")
    return {metric: float(values[metric]) for metric in metrics if metric in values}


def report_settings(
    section: dict[str, Any], metrics: list[str], test: str | None = None, correction: str | None = None
) -> dict[str, Settings]:
    """Each reported metric's :class:`Settings` from the study's ``report`` section and the command line."""
    chosen: dict[str, Any] = {}
    if (value := _choice(section, "test", TESTS, test)) is not None:
        chosen["test"] = value
    if (value := _choice(section, "correction", list(CORRECTIONS), correction)) is not None:
        chosen["correction"] = value
    for key in ("alpha", "power"):
        if (number := _fraction(section, key)) is not None:
            chosen[key] = number
    margins = _per_metric(section, "equivalence_margin", metrics)
    effects = _per_metric(section, "effect_of_interest", metrics)
    return {
        metric: Settings(
            **chosen, equivalence_margin=margins.get(metric), effect_of_interest=effects.get(metric)
        )
        for metric in metrics
    }


def settings_for(
    sweep_dir: Path, metrics: list[str], test: str | None, correction: str | None
) -> dict[str, Settings]:
    """:func:`report_settings` for the sweep in ``sweep_dir``."""
    from divergence_lab.report.collect import report_section

    return report_settings(report_section(sweep_dir), metrics, test, correction)
