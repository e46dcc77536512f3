"""One training run as a short linear recipe: check -> seed -> data -> method -> fit -> test -> metrics.json.

Model selection uses validation only: the reported test metrics come from the checkpoint with the best
``val/acc``. ``ckpt_path=auto`` resumes from the run's own ``checkpoints/last.ckpt`` when it exists.
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
from divergence_lab.loggers import build_loggers, close_loggers
from divergence_lab.run_dir import (
    CHECKPOINT_DIR,
    divergence_label,
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


def train(cfg: DictConfig) -> float:
    """Run one configured job; return ``cfg.optimized_metric`` for sweepers."""
    started = time.time()
    validate(cfg)
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    interactive = is_interactive()
    if not interactive:
        _quiet_lightning()
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
    title = " | ".join(str(x) for x in (cfg.method.name, divergence_label(cfg), f"seed {cfg.seed}") if x)
    callbacks: list[Any] = [best, last, ReliabilityDiagram(run_dir, title)]
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
            enable_progress_bar=interactive,
            enable_model_summary=interactive,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_checkpoint(cfg.ckpt_path, run_dir))
        final_train_loss = float(trainer.callback_metrics["train/loss"])
        (test_metrics,) = trainer.test(
            module,
            datamodule=datamodule,
            ckpt_path=best.best_model_path,
            verbose=interactive,
            weights_only=False,
        )
        metrics = {**test_metrics, "val/acc": float(best.best_model_score), "train/loss": final_train_loss}
        record = write_metrics(run_dir, cfg, metrics, started)
    finally:
        close_loggers(loggers)
    summary = "  ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
    print(f"[{title}] {summary}  ({run_dir})")
    return record["metrics"][cfg.optimized_metric]
