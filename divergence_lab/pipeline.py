"""One training run as a short linear recipe: check -> seed -> data -> method -> fit -> test -> metrics.json.

Model selection uses validation only: the reported test metrics come from the checkpoint with the best
``val/acc``, or from the last epoch for methods that report it (``method.checkpoint_selection: last``, GCD,
where the evaluation labels must not pick an epoch). With ``ckpt_path: auto`` (the default) a job started
again in its own run directory (a requeued SLURM job, a rerun sweep) returns its finished result, or
resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import get_method
from omegaconf import DictConfig

from divergence_lab.calibration import ReliabilityDiagram
from divergence_lab.config_checks import ConfigError, validate
from divergence_lab.data import instantiate_datamodule
from divergence_lab.job_status import mark_failed, mark_running
from divergence_lab.loggers import build_loggers, close_loggers, log_summary
from divergence_lab.run_dir import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    divergence_label,
    finished_record,
    is_global_rank_zero,
    resolve_checkpoint,
    save_resolved_config,
    write_metrics,
)

QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*is smaller than the logging interval.*",
    ".*LeafSpec.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*Experiment logs directory .* exists and is not empty.*",  # loggers.keep_earlier_csv keeps the old file
    ".*module\\(s\\) in eval mode.*",  # the frozen teacher of distillation methods, on purpose
    ".*The `srun` command is available.*",  # a process started on a SLURM machine but not as a SLURM job
)


def build_datamodule(cfg: DictConfig) -> Any:
    """Instantiate ``cfg.data`` for this run's seed; a bad data value becomes a :class:`ConfigError`."""
    try:
        return instantiate_datamodule(cfg.data, seed=cfg.seed)
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):
            raise ConfigError(str(error.__cause__)) from None
        raise
    except ValueError as error:  # raised while reading the data (e.g. files not found)
        if str(error).startswith("data."):
            raise ConfigError(str(error)) from None
        raise


def build_method(cfg: DictConfig, datamodule: Any) -> Any:
    """Call ``cfg.method.builder``; a value a method refuses (``method.<key> must ...``) is a ConfigError."""
    try:
        return get_method(cfg.method.builder)(cfg, datamodule)
    except ValueError as error:
        if str(error).startswith(("method.", "model.", "data.")):
            raise ConfigError(str(error)) from None
        raise


def is_interactive() -> bool:
    """A progress bar only for a single run in a terminal; sweeps and CI stay quiet."""
    hydra = HydraConfig.get()
    return hydra.mode != RunMode.MULTIRUN and sys.stderr.isatty()


def _quiet_lightning() -> None:
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", pattern)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_title(cfg: DictConfig) -> str:
    return " | ".join(str(x) for x in (cfg.method.name, divergence_label(cfg), f"seed {cfg.seed}") if x)


def train(cfg: DictConfig) -> float:
    """Run one configured job; return ``cfg.optimized_metric`` (a validation metric) for sweepers."""
    started = time.time()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.ckpt_path == "auto" and (finished := finished_record(run_dir, cfg)) is not None:
        print(f"[{run_title(cfg)}] finished earlier, nothing to do  ({run_dir})")
        return finished["metrics"][cfg.optimized_metric]
    mark_running(run_dir)
    try:
        validate(cfg)
        record = fit_and_test(cfg, run_dir, started)
    except Exception as error:
        mark_failed(run_dir, error)
        raise
    return record["metrics"][cfg.optimized_metric]


def fit_and_test(cfg: DictConfig, run_dir: Path, started: float) -> dict[str, Any]:
    """Train (or resume), test the selected checkpoint, write ``metrics.json``; return its content."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    from divergence_lab.resumption import EpochSeeding, cluster_plugins

    hydra = HydraConfig.get()
    interactive = is_interactive()
    if not interactive:
        _quiet_lightning()
    rank_zero = is_global_rank_zero()
    if rank_zero:
        save_resolved_config(run_dir, cfg)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    module = build_method(cfg, datamodule)

    checkpoint_dir = run_dir / CHECKPOINT_DIR
    best = ModelCheckpoint(
        checkpoint_dir, filename="best", monitor="val/acc", mode="max", enable_version_counter=False
    )
    # No monitor: overwritten at the end of every epoch, so a stopped job loses at most one epoch.
    last = ModelCheckpoint(checkpoint_dir, filename="last", enable_version_counter=False)
    title = run_title(cfg)
    callbacks: list[Any] = [best, last, EpochSeeding(cfg.seed)]
    if rank_zero:
        callbacks.append(ReliabilityDiagram(run_dir, title))
    if interactive:
        callbacks.append(RichProgressBar())

    sweep_name = Path(hydra.sweep.dir).name if hydra.mode == RunMode.MULTIRUN else None
    loggers = build_loggers(cfg, run_dir, sweep_name)
    try:
        trainer = L.Trainer(
            **cfg.trainer,
            default_root_dir=str(run_dir),
            logger=loggers,
            callbacks=callbacks,
            plugins=cluster_plugins(),
            enable_progress_bar=interactive,
            enable_model_summary=interactive,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_checkpoint(cfg.ckpt_path, run_dir))
        final_train_loss = float(trainer.callback_metrics["train/loss"])
        # test the best-validation checkpoint, or the last one for methods that report the last epoch (GCD)
        select_last = cfg.method.get("checkpoint_selection", "best") == "last"
        val_acc = float(trainer.callback_metrics["val/acc"]) if select_last else float(best.best_model_score)
        (test_metrics,) = trainer.test(
            module,
            datamodule=datamodule,
            ckpt_path=str(checkpoint_dir / LAST_CHECKPOINT) if select_last else best.best_model_path,
            verbose=interactive,
            weights_only=False,
        )
        metrics = {**test_metrics, "val/acc": val_acc, "train/loss": final_train_loss}
        record = write_metrics(run_dir, cfg, metrics, started) if rank_zero else {"metrics": metrics}
        log_summary(loggers, record["metrics"])
    except BaseException:
        # failed, or interrupted: submitit raises SystemExit after requeueing a preempted job, while SLURM
        # is already stopping the job's other processes (W&B's service among them)
        close_loggers(loggers, interrupted=True)
        raise
    close_loggers(loggers)
    summary = "  ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
    print(f"[{title}] {summary}  ({run_dir})")
    return record
