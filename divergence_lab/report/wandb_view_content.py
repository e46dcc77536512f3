"""What the W&B views of one sweep show, decided from what ``dlab-report`` reads (no W&B import here).

A sweep's runs are one W&B run group, ``<study_name>/<sweep folder>`` (the runs' ``group``), and carry the
flat ``run/`` config labels beside their nested config: a swept ``divergence``, ``method`` or ``data``
choice groups the runs by its label (``run/divergence`` ...), any other swept key ``a.b`` by the nested
config key ``a.b`` (a swept config-group choice ``model=…`` by ``model.name``). The runs log their
``val/*`` metrics against ``epoch`` (counted from 1); their summary holds every ``test/*`` metric of the
tested checkpoint, and ``selected/val_acc`` and ``selected/<optimized_metric, / as _>`` = that checkpoint's
validation values (the latter is the objective of an Optuna sweep).

:func:`view_content` lists the panels' metrics and titles (the report's axis labels, e.g.
``test accuracy (↑ better)``), the grouping keys, the parallel-coordinates axes of a search, a colour per
group (the report figures' palette) and the Markdown the views carry: ``report.md`` as ``dlab-report``
wrote it, its figure sections left out (W&B cannot show the sweep folder's image files), with a legend of
the group values W&B shows and their display names (``report.display_names``) under its title.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from divergence_lab.report.collect import SweepReport, is_search, read_sweep_config
from divergence_lab.report.errors import ReportError
from divergence_lab.report.figure_style import palette
from divergence_lab.report.metric_info import axis_label, direction

RUN_LABELS = {"divergence": "run/divergence", "method": "run/method", "data": "run/data"}  # flat run/ keys
CHOICE_NAME = "name"  # the field every config-group choice (model, teacher ...) names itself by
EPOCH_AXIS = "epoch"  # the runs' step metric of val/* (counted from 1)
VAL_SPLIT = "val/"
TEST_SPLIT = "test/"
SELECTED_SECTION = "selected/"  # summary: the tested checkpoint's validation values
SELECTED_ACCURACY = "val/acc"  # kept under selected/ beside the optimized_metric
VIEW_TITLE_SEPARATOR = " · "
PROJECT_PATH = re.compile(r"^(?P<entity>[A-Za-z0-9][\w.-]*)/(?P<project>[A-Za-z0-9][\w.-]*)$")
FIGURE_LINK = re.compile(r"^!\[[^\]]*\]\([^)]*\)\s*$")  # a Markdown image line: ![name](file.png)
SECTION_HEADING = "## "
TEXT_BLOCKS = ("|", "- ", "* ")  # Markdown table rows and list items: what a section says beside a figure


@dataclass(frozen=True)
class Panel:
    """One chart: the W&B key it draws and its title."""

    key: str
    title: str


@dataclass(frozen=True)
class GroupingKey:
    """A swept key of the sweep and the W&B config key its runs are grouped by."""

    swept: str
    config_key: str


@dataclass(frozen=True)
class SearchAxes:
    """The parallel-coordinates axes of a search: the swept config keys, then the objective (summary)."""

    config_keys: list[str]
    objective: Panel
    maximize: bool


@dataclass
class ViewContent:
    """Everything the workspace and the report of one sweep show (see the module docstring)."""

    study: str
    sweep: str
    groups: list[str]  # the W&B run groups shown: one per sweep folder (several when merged)
    grouping: list[GroupingKey]
    curves: list[Panel]  # val/* against epoch
    bars: list[Panel]  # summary metrics per group
    search: SearchAxes | None
    tables: str  # Markdown: the legend of group values and report.md without its figures
    runs: int  # finished runs read by the report
    colors: dict[str, str] = field(default_factory=dict)  # group value (one grouping key) -> hex colour

    @property
    def title(self) -> str:
        return f"{self.study}{VIEW_TITLE_SEPARATOR}{self.sweep}"


def parse_project_path(value: str, option: str) -> tuple[str, str]:
    """``(entity, project)`` of ``ENTITY/PROJECT``; :class:`ReportError` (one line) for anything else."""
    match = PROJECT_PATH.fullmatch(value.strip())
    if match is None:
        raise ReportError(f"{option} {value!r}: expected ENTITY/PROJECT (e.g. my-team/divergences)")
    return match["entity"], match["project"]


def study_name(sweep_dir: Path) -> str:
    """The study the sweep ran (``study_name`` of its ``multirun.yaml``, else its parent folder's name)."""
    name = read_sweep_config(sweep_dir).get("study_name")
    return str(name) if name else sweep_dir.parent.name


def wandb_group(sweep_dir: Path) -> str:
    """The W&B run group of the sweep's runs: ``<study_name>/<sweep folder name>``."""
    return f"{study_name(sweep_dir)}/{sweep_dir.name}"


def config_key(swept: str, config: Mapping[str, Any]) -> str:
    """The W&B config key the runs of a swept key are grouped by (module docstring)."""
    if swept in RUN_LABELS:
        return RUN_LABELS[swept]
    node: Any = config
    for part in swept.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return f"{swept}.{CHOICE_NAME}" if isinstance(node, Mapping) and CHOICE_NAME in node else swept


def summary_key(metric: str, optimized: str | None = None) -> str | None:
    """The W&B summary key of a reported metric: ``test/*`` as is; ``val/acc`` and the ``optimized``
    metric → ``selected/val_…`` (the tested checkpoint's value, which the runs keep only for these two);
    None for any other (``wall_time_s`` stays out of W&B's summary)."""
    if metric.startswith(TEST_SPLIT):
        return metric
    if metric in (SELECTED_ACCURACY, optimized):
        return SELECTED_SECTION + metric.replace("/", "_")
    return None


def summary_title(metric: str) -> str:
    """A bar's title: the metric's axis label, ``, selected epoch`` for a validation metric."""
    return axis_label(metric) + (", selected epoch" if metric.startswith(VAL_SPLIT) else "")


def curve_metrics(config: Mapping[str, Any], reported: list[str]) -> list[str]:
    """The ``val/*`` metrics the method logs each epoch (``method.val_metrics``), else the ``val/``
    counterparts of the reported test metrics."""
    declared = (config.get("method") or {}).get("val_metrics")
    if isinstance(declared, list) and declared:
        return [str(metric) for metric in declared if str(metric).startswith(VAL_SPLIT)]
    counterparts = (VAL_SPLIT + m.removeprefix(TEST_SPLIT) for m in reported if m.startswith(TEST_SPLIT))
    return list(dict.fromkeys(counterparts))


def search_axes(config: Mapping[str, Any], grouping: list[GroupingKey]) -> SearchAxes | None:
    """The axes of a search's parallel-coordinates panel; None without an ``optimized_metric``."""
    optimized = config.get("optimized_metric")
    key = summary_key(str(optimized), str(optimized)) if optimized else None
    if key is None:
        return None
    return SearchAxes(
        [g.config_key for g in grouping], Panel(key, summary_title(str(optimized))), direction(optimized) >= 0
    )


def group_colors(report: SweepReport) -> dict[str, str]:
    """``{group value: hex colour}`` in the report figures' palette, for a sweep with one swept key."""
    if len(report.varying) != 1:
        return {}
    values = [value for group in report.groups for key, value in group.key if key == report.varying[0]]
    values = list(dict.fromkeys(values))
    return {value: _hex(color) for value, color in zip(values, palette(len(values)), strict=True)}


def _hex(rgb: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgb[:3])


def legend_lines(report: SweepReport, grouping: list[GroupingKey]) -> list[str]:
    """One line per grouping key: the W&B key and its values as W&B shows them, each with its display
    name (``run/divergence``: ``kl`` = forward KL, ...)."""
    lines = []
    for key in grouping:
        values = dict.fromkeys(v for group in report.groups for k, v in group.key if k == key.swept)
        shown = [
            f"`{v}` = {report.display_names[v]}" if v in report.display_names else f"`{v}`" for v in values
        ]
        lines.append(f"- `{key.config_key}` ({key.swept}): {', '.join(shown)}")
    return lines


def without_figures(markdown: str) -> str:
    """``report.md`` without its figures (W&B cannot show the sweep folder's image files): a ``## `` section
    that is a figure (an image link and its caption, no table or list) is left out; from a section that
    also holds a table or a list (the across-datasets ranks beside their CD diagram) only the image link
    lines go."""
    sections: list[list[str]] = [[]]
    for line in markdown.splitlines():
        if line.startswith(SECTION_HEADING):
            sections.append([])
        sections[-1].append(line)
    kept: list[str] = []
    for section in sections:
        figures = [line for line in section if FIGURE_LINK.match(line)]
        if figures and not any(line.startswith(TEXT_BLOCKS) for line in section):
            continue
        kept += [line for line in section if line not in figures]
    return "\n".join(kept).strip() + "\n"


def with_legend(markdown: str, legend: list[str]) -> str:
    """``legend`` (Markdown lines) after the report's title line (``# ...``), else before the text."""
    lines = markdown.splitlines()
    at = 1 if lines and lines[0].startswith("# ") else 0
    return "\n".join([*lines[:at], "", *legend, *lines[at:]]).strip() + "\n"


def view_content(report: SweepReport, report_markdown: str) -> ViewContent:
    """The views of the reported sweep (``report.sweep_dir``; merged sweeps: all their groups are shown)
    from its report and the ``report.md`` text ``dlab-report`` wrote."""
    sweep_dir = report.sweep_dir
    config = read_sweep_config(sweep_dir)
    grouping = [GroupingKey(key, config_key(key, config)) for key in report.varying]
    optimized = config.get("optimized_metric")
    keys = {metric: summary_key(metric, str(optimized) if optimized else None) for metric in report.metrics}
    bars = [Panel(key, summary_title(metric)) for metric, key in keys.items() if key is not None]
    legend = ["## Groups in W&B", "", *legend_lines(report, grouping), ""] if grouping else []
    return ViewContent(
        study=study_name(sweep_dir),
        sweep=sweep_dir.name,
        groups=list(dict.fromkeys(wandb_group(folder) for folder in report.sweeps or [sweep_dir])),
        grouping=grouping,
        curves=[Panel(m, axis_label(m)) for m in curve_metrics(config, report.metrics)],
        bars=list(dict.fromkeys(bars)),
        search=search_axes(config, grouping) if is_search(sweep_dir) else None,
        tables=with_legend(without_figures(report_markdown), legend),
        runs=len(report.records),
        colors=group_colors(report),
    )
