"""The section of a hyperparameter search's report (Optuna, :func:`~divergence_lab.report.collect.
is_search`): its best trials by the objective it optimised, ties and pruned trials said.

Each trial is a group of the report (its parameters, its ``seeds_per_trial`` seeds pooled), summarised
as mean ± sample std over its seeds. The best is chosen as the sweeper chose it for ``best.yaml``: by
``optimized_metric`` in the study's ``direction``, the groups within ``hydra.sweeper.tie_tolerance`` of
the best mean tied with it (:func:`~divergence_lab.ground.ties.tied_best`). A trial stopped by its pruner
(a job whose ``metrics.json`` holds ``pruned``) is not ranked: its value is that of the checkpoint it
selected among the epochs it trained before it stopped.
"""

from __future__ import annotations

from typing import Any

from divergence_lab.ground.record_format import PRUNED_KEY
from divergence_lab.ground.ties import tied_best
from divergence_lab.report.collect import Group, SweepReport, is_search, read_sweep_config
from divergence_lab.report.figure_style import short_number

MAXIMIZE = "maximize"


def _described(report: SweepReport, group: Group, metric: str) -> str:
    mean, std = group.summary(metric)
    spread = f" ± {std:.4f} over {len(group.seeds)} seeds" if len(group.seeds) > 1 else ""
    return f"{mean:.4f}{spread} ({short_number(report.label(group))})"


def search_lines(report: SweepReport) -> list[str]:
    """The Markdown ``## Search`` section of a search's report (empty for other sweeps, or when no trial
    recorded the optimised metric)."""
    if not is_search(report.sweep_dir):
        return []
    config = read_sweep_config(report.sweep_dir)
    sweeper: dict[str, Any] = (config.get("hydra") or {}).get("sweeper") or {}
    metric = str(config.get("optimized_metric"))
    stopped = {job for job, record in report.records if record.get(PRUNED_KEY)}
    pruned = [group for group in report.groups if stopped.intersection(group.jobs)]
    ranked = [group for group in report.groups if group not in pruned and group.values.get(metric)]
    if not ranked:
        return []
    tolerance = float(sweeper.get("tie_tolerance") or 0.0)
    means = {index: group.summary(metric)[0] for index, group in enumerate(ranked)}
    maximize = str(sweeper.get("direction")) == MAXIMIZE
    tied = tied_best(means, maximize, tolerance)
    if not tied:
        return []
    best_mean = (max if maximize else min)(means[index] for index in tied)
    best = next(index for index in tied if means[index] == best_mean)
    lines = ["## Search", "", f"- Best {metric}: {_described(report, ranked[best], metric)}"]
    if len(tied) > 1:
        others = "; ".join(_described(report, ranked[index], metric) for index in tied if index != best)
        lines.append(
            f"- Tied with it (within hydra.sweeper.tie_tolerance={tolerance:g}): {others}; `best.yaml` lists "
            "them all, and its rerun command uses the best"
        )
    if pruned:
        labels = ", ".join(short_number(report.label(group)) for group in pruned)
        lines.append(
            f"- Pruned, not ranked: {len(pruned)} trial(s) ({labels}); their values are those of the "
            "checkpoint each run selected among the epochs it trained before pruning stopped it"
        )
    return [*lines, ""]
