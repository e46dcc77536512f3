"""Experiment loggers: a CSV logger in every run directory, and Weights & Biases when ``logger=wandb``.

Every job is its own W&B run, grouped by sweep (``group`` = the study name plus the sweep folder, so one
dashboard compares the divergences of one sweep side by side); ``job_type`` is the method and the tags
carry the divergence, method, data and seed. The run id is stored in the run directory (``wandb_id.txt``),
so a resumed or requeued job continues its own W&B run. Without a login (no ``WANDB_API_KEY``, no
``api.wandb.ai`` entry in ``~/.netrc``) runs are logged offline; ``wandb sync`` uploads them later.

The W&B config holds the resolved run config, nested as in ``config.yaml`` (W&B shows ``divergence.name``,
``divergence.temperature`` ...), plus a flat ``run/`` section of the labels a workspace groups and filters
runs by (:func:`run_labels`): ``run/study``, ``run/sweep`` (the group), ``run/method``, ``run/divergence``
(``none`` for methods that use no divergence), ``run/data``, ``run/seed``, and every divergence parameter
as ``run/divergence/<param>`` (``run/divergence/temperature`` ...; only for methods that use a divergence).
The flat keys use ``/``, never ``.``: W&B reads a dot in a config key as nesting when filtering. Divergence
parameters that say how a value is computed rather than which value (``logger.wandb.not_labelled``:
``execution``, ``chunk_rows``) stay in the nested config and get no flat label, the keys views group, filter
and draw parallel coordinates by.

Beside the labels, the config holds the run's provenance (:func:`provenance_config`): ``git/commit`` and
``git/dirty`` of the source tree that ran (also handed to W&B as the run's commit: the run folder is not a
repository, so W&B cannot find it itself), ``fingerprint`` (the SHA-256 of the run's result-relevant settings,
as in ``fingerprint.json``) and ``job/overrides`` (the job's own overrides; W&B's recorded command line is
the same list instead of the whole sweep command).

The summary (:func:`summary_values`) holds every ``test/*`` metric of the tested checkpoint,
``selected/<metric>`` = the validation values of that checkpoint (``selected/val_acc`` where the method
logs an accuracy, and the ``optimized_metric``, e.g. ``selected/val_nll``), and, when the checkpoint was
chosen as the best epoch by ``optimized_metric``, ``best/<metric>`` = its best value over the epochs
(``best/val_acc`` by default). Methods that test the last epoch (``method.checkpoint_selection: last``,
GCD) get no ``best/`` key: their validation labels must not pick an epoch. A ``/`` inside a metric name
becomes ``_`` in these keys. Beside them, the summary holds what ``metrics.json`` records about the tested
checkpoint under the same names (:func:`tested_summary`): ``selected_epoch``, ``checkpoint_selection``,
``n_train``, ``n_val``, ``n_test``, and the teachers the run distilled from (:func:`teacher_summary`, from
``teacher.json``): ``teacher/key``, ``teacher/model`` and each test metric as ``teacher/<name>``
(``teacher/acc`` = the teacher's test accuracy); with several teachers, ``teacher/<key>/...``. Nothing else:
W&B's own copies of the last logged values are switched off (:mod:`divergence_lab.run.wandb_epochs`).

At the end the run logs its pictures and tables (:func:`log_media`): ``images/reliability`` (the reliability
diagram of the tested checkpoint), ``images/epoch_curves`` (its per-epoch curves with the tested epoch
marked, :mod:`divergence_lab.run.epoch_figure`) and ``test/per_class_acc``, a table of the tested network's
accuracy per class (``class``, ``accuracy``).

W&B counts epochs from 1, as the progress lines and the report (:mod:`divergence_lab.run.wandb_epochs`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from divergence_lab.ground.record_format import (
    PER_CLASS_KEY,
    TEACHER_FILE,
    fingerprint_digest,
    read_teachers,
)
from divergence_lab.ground.wandb_login import wandb_logged_in
from divergence_lab.metrics.calibration import RELIABILITY_FIGURE_FILE
from divergence_lab.run.epoch_figure import write_epoch_figure
from divergence_lab.run.folder import tests_last_epoch
from divergence_lab.run.ranks import is_global_rank_zero
from divergence_lab.run.record import divergence_label, git_commit

log = logging.getLogger(__name__)

RUN_SECTION = "run/"
# metrics.json entries on the tested checkpoint, copied into the W&B summary (divergence_lab.run.record)
TESTED_KEYS = ("selected_epoch", "checkpoint_selection", "n_train", "n_val", "n_test")
NO_DIVERGENCE = "none"  # run/divergence of a method that uses no divergence
TEACHER_SECTION = "teacher/"
TEST_PREFIX = "test/"
IMAGE_KEYS = {"images/reliability": RELIABILITY_FIGURE_FILE}  # W&B key -> figure in the run folder
EPOCH_CURVES_KEY = "images/epoch_curves"
PER_CLASS_TABLE = f"{TEST_PREFIX}{PER_CLASS_KEY}"
PER_CLASS_COLUMNS = ["class", "accuracy"]


def wandb_mode(requested: str | None) -> str:
    """The explicit mode, else ``WANDB_MODE``, else online when logged in and offline otherwise."""
    if requested:
        return requested
    return os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")


def persistent_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory, created on first use."""
    path = run_dir / "wandb_id.txt"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def keep_earlier_csv(run_dir: Path) -> None:
    """Keep an earlier attempt's ``metrics.csv`` as ``metrics.attempt-<k>.csv``.

    Lightning's CSV logger deletes an existing ``metrics.csv``; a resumed run must not lose its curves.
    """
    csv_file = run_dir / "csv" / "metrics.csv"
    if csv_file.is_file():
        attempt = len(list(csv_file.parent.glob("metrics.attempt-*.csv")))
        csv_file.rename(csv_file.with_name(f"metrics.attempt-{attempt}.csv"))


def run_tags(cfg: DictConfig, label: str | None) -> list[str]:
    """Divergence (when the method uses one), method, data, ``seed=<n>``, then the user's own tags."""
    fixed = (label, cfg.method.name, cfg.data.name, f"seed={cfg.seed}")
    return [tag for tag in (*fixed, *cfg.logger.wandb.tags) if tag]


def _flat_items(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """``{prefix + key: value}``, nested mappings flattened with ``/`` between their keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat_items(f"{prefix}{key}/", value))
        else:
            flat[prefix + str(key)] = value
    return flat


def run_labels(cfg: DictConfig, group: str) -> dict[str, Any]:
    """The flat ``run/`` config keys a W&B workspace groups and filters runs by (see the module docstring)."""
    label = divergence_label(cfg)
    labels: dict[str, Any] = {
        f"{RUN_SECTION}study": cfg.study_name,
        f"{RUN_SECTION}sweep": group,
        f"{RUN_SECTION}method": cfg.method.name,
        f"{RUN_SECTION}divergence": label or NO_DIVERGENCE,
        f"{RUN_SECTION}data": cfg.data.name,
        f"{RUN_SECTION}seed": cfg.seed,
    }
    if label is not None:
        parameters = OmegaConf.to_container(cfg.divergence, resolve=True)
        parameters.pop("name")
        for knob in cfg.logger.wandb.get("not_labelled") or ():
            parameters.pop(knob, None)
        labels.update(_flat_items(f"{RUN_SECTION}divergence/", parameters))
    return labels


def provenance_config(run_dir: Path, job_overrides: Sequence[str]) -> dict[str, Any]:
    """``git/commit``, ``git/dirty``, ``fingerprint`` and ``job/overrides`` (see the module docstring)."""
    source = git_commit()
    return {
        "git/commit": source["commit"],
        "git/dirty": source["dirty"],
        "fingerprint": fingerprint_digest(run_dir),
        "job/overrides": list(job_overrides),
    }


def wandb_config(cfg: DictConfig, group: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The W&B run config: the resolved run config, nested, plus the flat ``run/`` labels and the
    ``provenance`` (:func:`provenance_config`)."""
    return {**OmegaConf.to_container(cfg, resolve=True), **run_labels(cfg, group), **provenance}


def build_loggers(
    cfg: DictConfig, run_dir: Path, sweep_name: str | None, job_overrides: Sequence[str] = ()
) -> list[Any]:
    """CSV always; W&B when ``cfg.logger.wandb`` is set (in the rank-0 process only). ``job_overrides``:
    the job's own overrides, recorded as its command line."""
    from lightning.pytorch.loggers import CSVLogger

    rank_zero = is_global_rank_zero()
    if rank_zero:
        keep_earlier_csv(run_dir)
    loggers: list[Any] = [CSVLogger(save_dir=str(run_dir), name="csv", version="")]
    wandb_cfg = cfg.logger.get("wandb")
    if wandb_cfg and rank_zero:
        import wandb

        from divergence_lab.run.wandb_epochs import CountedEpochsWandbLogger

        group = f"{cfg.study_name}/{sweep_name}" if sweep_name else cfg.study_name
        label = divergence_label(cfg)
        provenance = provenance_config(run_dir, job_overrides)
        commit = {"git_commit": provenance["git/commit"]} if provenance["git/commit"] else {}
        loggers.append(
            CountedEpochsWandbLogger(
                project=wandb_cfg.project,
                entity=wandb_cfg.entity,
                name=f"{label or cfg.method.name}-seed{cfg.seed}-{run_dir.name}",
                id=persistent_run_id(run_dir),
                save_dir=str(run_dir),
                group=group,
                job_type=cfg.method.name,
                tags=run_tags(cfg, label),
                mode=wandb_mode(wandb_cfg.mode),
                resume="allow",
                config=wandb_config(cfg, group, provenance),
                settings=wandb.Settings(**commit),
                job_overrides=job_overrides,
            )
        )
    return loggers


def _summary_key(section: str, metric: str) -> str:
    return f"{section}/{metric.replace('/', '_')}"


def summary_values(metrics: dict[str, float], optimized_metric: str, tested_best: bool) -> dict[str, float]:
    """The W&B summary of a finished run, from its ``metrics.json`` metrics (see the module docstring);
    ``tested_best``: the tested checkpoint is the best epoch by ``optimized_metric`` (not the last one)."""
    summary = {name: value for name, value in metrics.items() if name.startswith("test/")}
    for metric in dict.fromkeys(("val/acc", optimized_metric)):
        if metric in metrics:  # a method without an accuracy (language models) has no val/acc
            summary[_summary_key("selected", metric)] = metrics[metric]
    if tested_best:
        summary[_summary_key("best", optimized_metric)] = metrics[optimized_metric]
    return summary


def tested_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``metrics.json`` that describe the tested checkpoint (:data:`TESTED_KEYS`) present in
    ``record``, for the W&B summary under the same names."""
    return {key: record[key] for key in TESTED_KEYS if key in record}


def teacher_summary(run_dir: Path) -> dict[str, Any]:
    """``teacher/key``, ``teacher/model`` and ``teacher/<test metric>`` (``test/acc`` -> ``teacher/acc``) of
    each teacher in the run's ``teacher.json``; ``teacher/<key>/...`` when there are several; else empty."""
    teachers = read_teachers(run_dir / TEACHER_FILE)
    summary: dict[str, Any] = {}
    for key, teacher in sorted(teachers.items()):
        prefix = TEACHER_SECTION if len(teachers) == 1 else f"{TEACHER_SECTION}{key}/"
        summary[f"{prefix}key"] = key
        summary[f"{prefix}model"] = teacher.get("model")
        for metric, value in teacher.get("test_metrics", {}).items():
            summary[prefix + metric.removeprefix(TEST_PREFIX).replace("/", "_")] = value
    return summary


def wandb_loggers(loggers: list[Any]) -> list[Any]:
    from lightning.pytorch.loggers import WandbLogger

    return [logger for logger in loggers if isinstance(logger, WandbLogger)]


def log_summary(loggers: list[Any], record: Mapping[str, Any], cfg: DictConfig, run_dir: Path) -> None:
    """Put the final numbers of ``record`` (``metrics.json``'s content) into the W&B run summary:
    :func:`summary_values` of its metrics, :func:`tested_summary` and :func:`teacher_summary`."""
    summary = summary_values(record["metrics"], cfg.optimized_metric, tested_best=not tests_last_epoch(cfg))
    summary.update(tested_summary(record))
    summary.update(teacher_summary(run_dir))
    for logger in wandb_loggers(loggers):
        logger.experiment.summary.update(summary)


def log_media(loggers: list[Any], record: Mapping[str, Any], run_dir: Path, title: str) -> None:
    """Log the run's figures (the reliability diagram, the per-epoch curves drawn now) as W&B images and its
    per-class accuracy as a W&B table (see the module docstring); nothing without a W&B logger. They are
    extras of a run that has finished: a failure here is one warning line, never a failed run."""
    runs = wandb_loggers(loggers)
    if not runs:
        return
    try:
        media = run_media(record, run_dir, title)
        for logger in runs:
            logger.experiment.log(media)
    except Exception as error:  # matplotlib, file and W&B errors alike; metrics.json is already written
        log.warning("W&B images and tables not logged: %s: %s", type(error).__name__, error)


def run_media(record: Mapping[str, Any], run_dir: Path, title: str) -> dict[str, Any]:
    """``{W&B key: wandb.Image or wandb.Table}`` of the run (see :func:`log_media`)."""
    import wandb

    figures = {key: run_dir / name for key, name in IMAGE_KEYS.items() if (run_dir / name).is_file()}
    curves = write_epoch_figure(run_dir, title, record.get("selected_epoch"))
    if curves is not None:
        figures[EPOCH_CURVES_KEY] = curves
    media: dict[str, Any] = {key: wandb.Image(str(path)) for key, path in figures.items()}
    if PER_CLASS_KEY in record:
        rows = [[index, accuracy] for index, accuracy in enumerate(record[PER_CLASS_KEY])]
        media[PER_CLASS_TABLE] = wandb.Table(columns=PER_CLASS_COLUMNS, data=rows)
    return media


def close_loggers(loggers: list[Any], interrupted: bool = False) -> None:
    """Finish the W&B run of this job (else the next job of a multirun would log into it).

    When the job is being interrupted (an error, or a preemption that submitit answers by requeueing and
    exiting), W&B may already be unreachable; an error while closing must not replace the interruption,
    or a requeued job would be reported as failed. The requeued job continues the same W&B run.
    """
    if not wandb_loggers(loggers):
        return
    import wandb

    if not interrupted:
        wandb.finish()
        return
    try:
        wandb.mark_preempting()
        wandb.finish(exit_code=1)
    except Exception as error:  # the run resumes under the same id; nothing is lost by giving up here
        log.warning("W&B run not closed cleanly while interrupting: %s", error)
