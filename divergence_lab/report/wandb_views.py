"""W&B views of one sweep: ``dlab-report <sweep> --wandb-view ENTITY/PROJECT`` saves a W&B workspace
(``<study> · <sweep>``) and a W&B report for the sweep's run group (``<study_name>/<sweep folder>``), after
writing the report files as ``dlab-report`` always does, and prints both URLs.

Both views filter the runs on the group and group them by the swept keys (a swept ``divergence`` by the
runs' ``run/divergence`` label, another key ``a.b`` by the config key ``a.b``;
:mod:`divergence_lab.report.wandb_view_content` decides what is shown). The panels:

* **Validation curves**: each ``val/*`` metric the method logs (``method.val_metrics``) against ``epoch``
  (counted from 1), one line per group = the mean over its runs, band = ± their standard deviation
  (W&B's ``groupby_aggfunc=mean``, ``groupby_rangefunc=stddev``), no smoothing.
* **Test metrics**: one bar chart per reported metric (``report.metrics``; ``val/acc`` or the
  ``optimized_metric`` is read as ``selected/val_…``, the tested checkpoint's value; a number W&B's
  summary lacks, such as ``wall_time_s``, gets no bar), titled with the report's axis label, one bar per
  group = the mean over its runs, error bar = ± their standard deviation.
* **Search** (Optuna sweeps only): a parallel-coordinates panel over the swept keys and the objective
  (``optimized_metric``, read as ``selected/<metric, / as _>``).
* **Runs**: a run comparer (config and summary side by side, differences only).
* **Statistics**: a Markdown panel (in the report: a Markdown block) holding the group values W&B shows
  with their display names (``report.display_names``), then ``report.md``'s tables: the main table, the
  paired differences with the baseline and their intervals, the corrected p-values, minimum detectable
  effects, verdicts and ranks, model selection, per-seed values and provenance.

What stays in ``dlab-report``: W&B has no statistics panel. Its bars and bands are unpaired summaries of
the runs; the paired comparison with the baseline (intervals, paired tests, Holm or BH correction, MDE,
verdicts, ranks) is computed by ``dlab-report`` alone, and the views only carry its text, as of the run.

``--spec-only FILE`` writes the specs of both views as JSON (``{"workspace": ..., "report": ...}``, the
models the library would send) and saves nothing, without any network access; without ``--wandb-view``
the entity and project in it are the placeholders ``ENTITY`` and ``PROJECT``. Saving needs a W&B login
(``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc``), checked before anything is written.

The ``wandb-workspaces`` library (``pip install 'divergence_lab[wandb-views]'``) is imported only when the
option is used. Building a view never calls the W&B API: a report's run set looks its project up when
turned into a spec, so run sets get their entity and project only when saved.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from divergence_lab.ground.wandb_login import NOT_LOGGED_IN, wandb_logged_in
from divergence_lab.report.collect import SweepReport
from divergence_lab.report.errors import ReportError, error_reason
from divergence_lab.report.wandb_view_content import (
    EPOCH_AXIS,
    ViewContent,
    parse_project_path,
    view_content,
)

OPTION = "--wandb-view"
INSTALL_HINT = "pip install 'divergence_lab[wandb-views]'"
PLACEHOLDER_ENTITY = "ENTITY"
PLACEHOLDER_PROJECT = "PROJECT"
REPORT_FILE = "report.md"
AGGREGATE = "mean"
BAND = "stddev"
NO_SMOOTHING = "none"
RUNSET_NAME = "Sweep runs"
REPORT_TITLE_LIMIT = 128  # characters: the library's limit on a report title
REPORT_WIDTH = "fluid"  # the tables are wide
CURVES, BARS, SEARCH, RUNS, STATISTICS = (
    "Validation curves (mean ± std over runs)",
    "Test metrics per group (mean ± std over runs)",
    "Search: swept settings and objective",
    "Runs compared",
    "Statistics (dlab-report)",
)


@dataclass(frozen=True)
class ViewTarget:
    """Where the views go: a W&B entity and project, or (``spec_file``) a JSON file, nothing saved."""

    entity: str
    project: str
    spec_file: Path | None = None


def check_view_options(project_path: str | None, spec_file: Path | None) -> ViewTarget | None:
    """Where the views go (None when neither ``--wandb-view`` nor ``--spec-only`` is given).

    Refuses (:class:`ReportError`, one line) what would stop the views after the report is written: a
    malformed ENTITY/PROJECT, a missing library, no W&B login (when saving), a spec file that cannot be
    written (``--spec-only``). Nothing is written or sent."""
    if project_path is None and spec_file is None:
        return None
    if project_path is not None:
        entity, project = parse_project_path(project_path, OPTION)
    else:
        entity, project = PLACEHOLDER_ENTITY, PLACEHOLDER_PROJECT
    library()
    if spec_file is not None:
        check_spec_file(spec_file)
    elif not wandb_logged_in():
        raise ReportError(f"{OPTION} {entity}/{project}: {NOT_LOGGED_IN}; nothing written")
    return ViewTarget(entity, project, spec_file)


def library() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The ``wandb_workspaces`` modules (workspaces, reports.v2, expr), imported now; :class:`ReportError`
    naming the extra to install when the library is missing."""
    try:
        return tuple(
            importlib.import_module(f"wandb_workspaces.{name}")
            for name in ("workspaces", "reports.v2", "expr")
        )
    except ImportError:
        raise ReportError(f"{OPTION} needs the wandb-workspaces library: {INSTALL_HINT}") from None


def check_spec_file(path: Path) -> None:
    """Refuse (:class:`ReportError`) a ``--spec-only`` file that cannot be written."""
    folder = path.parent
    if path.exists() and not path.is_file():
        raise ReportError(f"--spec-only {path}: it exists and is not a file")
    if not folder.is_dir():
        raise ReportError(f"--spec-only {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ReportError(f"--spec-only {path}: permission denied")


def _group_filter(expr: ModuleType, groups: list[str]) -> Any:
    group = expr.Metric("Group")
    return expr.And(group == groups[0] if len(groups) == 1 else group.isin(groups))


def _sections(content: ViewContent) -> dict[str, list[Any]]:
    """The panels of each section, in order (module docstring); sections without a panel are left out."""
    _, wr, _ = library()
    shown = content.runs
    curves = [
        wr.LinePlot(
            title=panel.title,
            x=EPOCH_AXIS,
            y=[panel.key],
            title_x=EPOCH_AXIS,
            groupby_aggfunc=AGGREGATE,
            groupby_rangefunc=BAND,
            smoothing_type=NO_SMOOTHING,
            max_runs_to_show=shown,
        )
        for panel in content.curves
    ]
    bars = [
        wr.BarPlot(
            title=panel.title,
            metrics=[panel.key],
            orientation="v",
            groupby_aggfunc=AGGREGATE,
            groupby_rangefunc=BAND,
            max_runs_to_show=shown,
            max_bars_to_show=shown,
        )
        for panel in content.bars
    ]
    search = []
    if content.search is not None:
        columns = [
            wr.ParallelCoordinatesPlotColumn(metric=wr.Config(key)) for key in content.search.config_keys
        ]
        objective = content.search.objective
        columns.append(
            wr.ParallelCoordinatesPlotColumn(
                metric=wr.SummaryMetric(objective.key),
                display_name=objective.title,
                inverted=not content.search.maximize,
            )
        )
        search = [wr.ParallelCoordinatesPlot(columns=columns, title=f"Search objective: {objective.title}")]
    sections = {CURVES: curves, BARS: bars, SEARCH: search, RUNS: [wr.RunComparer(diff_only="split")]}
    return {name: panels for name, panels in sections.items() if panels}


def build_workspace(content: ViewContent, entity: str, project: str) -> Any:
    """The saved workspace of the sweep (``wandb_workspaces.workspaces.Workspace``), not saved yet."""
    ws, wr, expr = library()
    panels = {**_sections(content), STATISTICS: [wr.MarkdownPanel(markdown=content.tables)]}
    epoch_axis = {"panel_settings": ws.SectionPanelSettings(x_axis=EPOCH_AXIS)}
    sections = [
        ws.Section(name=name, panels=shown, is_open=True, **(epoch_axis if name == CURVES else {}))
        for name, shown in panels.items()
    ]
    runset = ws.RunsetSettings(
        filters=_group_filter(expr, content.groups),
        groupby=[expr.Config(key.config_key) for key in content.grouping],
        group_colors=dict(content.colors),
        pinned_columns=[f"summary:{panel.key}" for panel in content.bars],
    )
    settings = ws.WorkspaceSettings(smoothing_type=NO_SMOOTHING, max_runs=max(content.runs, 1))
    return ws.Workspace(
        entity=entity,
        project=project,
        name=content.title,
        sections=sections,
        settings=settings,
        runset_settings=runset,
    )


def build_report(content: ViewContent, entity: str, project: str, runs_in_project: bool = False) -> Any:
    """The W&B report of the sweep (``wandb_workspaces.reports.v2.Report``), not saved yet.

    ``runs_in_project``: give the run set its entity and project, which the library looks up through the
    W&B API when it turns the report into a spec (only when saving)."""
    _, wr, expr = library()
    located = {"entity": entity, "project": project} if runs_in_project else {}
    runset = wr.Runset(
        name=RUNSET_NAME,
        filters=_group_filter(expr, content.groups),
        groupby=[f"config.{key.config_key}" for key in content.grouping],
        pinned_columns=[f"summary:{panel.key}" for panel in content.bars],
        **located,
    )
    colors = {
        wr.RunsetGroup(
            RUNSET_NAME, (wr.RunsetGroupKey(wr.Config(content.grouping[0].config_key), value),)
        ): color
        for value, color in content.colors.items()
    }
    panels = [panel for section in _sections(content).values() for panel in section]
    keys = ", ".join(f"`{key.config_key}`" for key in content.grouping) or "nothing (one group)"
    groups = ", ".join(f"`{group}`" for group in content.groups)
    description = (
        f"The runs of W&B group {groups}, grouped by {keys}: validation curves, test metrics per group "
        "(mean ± std over runs) and the statistics of dlab-report (paired differences with the baseline, "
        "intervals, corrected p-values, ranks), which W&B does not compute."
    )
    return wr.Report(
        entity=entity,
        project=project,
        title=content.title[:REPORT_TITLE_LIMIT],
        description=description,
        width=REPORT_WIDTH,
        blocks=[
            wr.P(description),
            wr.PanelGrid(runsets=[runset], panels=panels, custom_run_colors=colors),
            wr.H2(STATISTICS),
            wr.MarkdownBlock(text=content.tables),
        ],
    )


def view_specs(content: ViewContent, entity: str, project: str) -> dict[str, Any]:
    """``{"workspace": ..., "report": ...}``: the JSON the library would send for each view (no network)."""
    models = {
        "workspace": build_workspace(content, entity, project)._to_model(),
        "report": build_report(content, entity, project)._to_model(),
    }
    return {
        name: model.model_dump(mode="json", by_alias=True, exclude_none=True)
        for name, model in models.items()
    }


def write_specs(specs: dict[str, Any], path: Path) -> None:
    """Write ``specs`` as JSON into ``path`` whole or not at all (a temporary file, then renamed)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(specs, file, indent=2, ensure_ascii=False)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def publish_views(report: SweepReport, target: ViewTarget) -> list[str]:
    """Build the views of the reported sweep from its ``report.md`` (written already) and write their specs
    (``target.spec_file``) or save them to W&B; return the lines to print (the file, or both URLs).

    Raises :class:`ReportError` (one line) when ``report.md`` cannot be read, the spec file cannot be
    written or W&B refuses a view; the report files stay as written."""
    where = f"{OPTION} {target.entity}/{target.project}"
    try:
        content = view_content(report, (report.sweep_dir / REPORT_FILE).read_text())
    except OSError as error:
        raise ReportError(
            f"{where}: cannot read {report.sweep_dir / REPORT_FILE}: {error_reason(error)}"
        ) from None
    if target.spec_file is not None:
        try:
            write_specs(view_specs(content, target.entity, target.project), target.spec_file)
        except (OSError, ValueError) as error:  # ValueError: the library refused a value (pydantic)
            raise ReportError(f"--spec-only {target.spec_file}: {error_reason(error)}") from None
        return [
            f"wrote the W&B workspace and report specs of {', '.join(content.groups)} to {target.spec_file}"
        ]
    saved: list[str] = []
    try:
        workspace = build_workspace(content, target.entity, target.project).save()
        saved.append(f"W&B workspace: {workspace.url}")
        view = build_report(content, target.entity, target.project, runs_in_project=True).save()
        saved.append(f"W&B report: {view.url}")
    except Exception as error:  # the W&B API's errors have no common base (HTTP, auth, value errors)
        done = f" ({'; '.join(saved)})" if saved else ""
        raise ReportError(
            f"{where}: the report files were written, the W&B views could not all be saved{done}: "
            f"{error_reason(error)}"
        ) from None
    return saved
