"""One training run as a short linear recipe: check -> seed -> data -> trainer -> the method's stages ->
its module -> fit -> test -> metrics.json.

The stages (:mod:`divergence_lab.run.stages`) run on the trainer's device and precision, and a resumed run
loads their saved outputs instead of running them again. ``trainer.precision: auto`` (``trainer=gpu``) is
resolved when the Trainer is built (:func:`resolve_precision`): ``bf16-mixed`` on a CUDA GPU with native
bfloat16, else ``32-true``; the teacher cache trains teachers under the same precision.

Model selection uses validation only: the reported test metrics come from the checkpoint with the best
``optimized_metric`` (``val/acc`` by default, maximised; ``val/nll`` and other losses are minimised), among
tied epochs the one ``checkpoint_selection.tie_break`` prefers (``val/nll`` by default:
:mod:`divergence_lab.run.selection`), or from the last epoch for methods that report it
(``method.checkpoint_selection: last``, GCD, where the evaluation labels must not pick an epoch).
``metrics.json`` records the selected checkpoint's value of ``optimized_metric`` and its ``val/acc`` (where
the method logs one), the selected epoch and the rule, the split sizes, and for classifiers the per-class
test accuracy (and ``confusion.json``); see :mod:`divergence_lab.run.record`.

A run folder holds one config (:mod:`divergence_lab.run.fingerprint`). With ``ckpt_path: auto`` (the
default) a job started again in its own folder (a requeued SLURM job, a rerun sweep) returns its finished
result, or resumes from ``checkpoints/last.ckpt``; a checkpoint that already holds the final epoch goes
straight to testing. SIGINT / SIGTERM end a run with one line naming where it stopped and the command that
continues it, ``status.json`` = interrupted and exit code 130 / 143 (:mod:`divergence_lab.run.interruption`).

The process that runs a job owns its folder while it writes there (:mod:`divergence_lab.run.ownership`):
another process on the same folder is refused in one line before anything is written. In a sweep every
line the job logs carries its label (``[job 3 kd kl seed 1]``).
"""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from divergence_lab.config.checks import validate_divergence, validate_settings
from divergence_lab.data import instantiate_datamodule
from divergence_lab.ground.progress import current_position, set_position
from divergence_lab.ground.record_format import (
    CHECKPOINT_DIR,
    CONFUSION_FILE,
    LAST_CHECKPOINT,
    PER_CLASS_KEY,
    RUN_FINGERPRINT_FILE,
    TEACHER_FILE,
    finished_record,
)
from divergence_lab.methods.stages import StageContext, build_module, declared_stages
from divergence_lab.metrics.calibration import ReliabilityDiagram
from divergence_lab.metrics.per_class import CountsTestClasses, confusion_record, per_class_accuracy
from divergence_lab.run.fingerprint import check_run_dir, fingerprint_settings, write_fingerprint
from divergence_lab.run.folder import resolve_checkpoint, save_resolved_config
from divergence_lab.run.interruption import (
    RunInterrupted,
    end_worker_process,
    handled_signals,
    in_sweep_worker,
    rerun_command,
)
from divergence_lab.run.loggers import build_loggers, close_loggers, log_summary
from divergence_lab.run.ownership import is_owner_process, owned_folder, release_all
from divergence_lab.run.ranks import is_global_rank_zero
from divergence_lab.run.record import (
    divergence_label,
    job_label,
    mark_failed,
    mark_finished,
    mark_interrupted,
    mark_running,
    write_json_atomically,
    write_metrics,
)
from divergence_lab.run.selection import SelectedCheckpoint, describe_selection, selection_rule

QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*is smaller than the logging interval.*",
    ".*LeafSpec.*",
    ".*Checkpoint directory .* exists and is not empty.*",
    ".*Experiment logs directory .* exists and is not empty.*",  # loggers.keep_earlier_csv keeps the old file
    ".*module\\(s\\) in eval mode.*",  # the frozen teacher of distillation methods, on purpose
    ".*The `srun` command is available.*",  # a process started on a SLURM machine but not as a SLURM job
    ".*litmodels.*",  # an advert
)
GPU_ACCELERATORS = ("gpu", "cuda", "auto")  # where precision: auto may pick bfloat16
SPLITS = ("train", "val", "test")  # metrics.json records n_<split>, the examples of each
log = logging.getLogger("divergence_lab")


def build_datamodule(cfg: DictConfig) -> Any:
    """Instantiate and set up ``cfg.data`` for this run's seed (a refused value raises its ConfigError)."""
    return instantiate_datamodule(cfg.data, seed=cfg.seed)


def split_sizes(datamodule: Any) -> dict[str, int]:
    """``{"n_train": ..., "n_val": ..., "n_test": ...}``: the examples of each split's data set."""
    return {f"n_{split}": len(getattr(datamodule, f"{split}_dataloader")().dataset) for split in SPLITS}


def class_results(module: Any, run_dir: Path, max_classes: int | None, write: bool) -> dict[str, Any]:
    """``{"per_class_acc": [...]}`` of a module that counts its test predictions per class (else empty);
    with ``write``, also ``confusion.json`` when there are at most ``max_classes`` classes."""
    if not isinstance(module, CountsTestClasses):
        return {}
    counts = module.test_class_counts().cpu()
    if write and max_classes is not None and counts.shape[0] <= max_classes:
        write_json_atomically(run_dir / CONFUSION_FILE, confusion_record(counts))
    return {PER_CLASS_KEY: per_class_accuracy(counts)}


def resolve_precision(trainer_cfg: DictConfig) -> Any:
    """``trainer.precision`` as Lightning takes it: ``auto`` (``trainer=gpu``) becomes ``bf16-mixed`` on a
    CUDA GPU with native bfloat16 (Ampere and later), else ``32-true``, and the choice is logged in one line;
    any other value (checked by :func:`~divergence_lab.config.checks.check_precision`) is returned as is."""
    precision = trainer_cfg.get("precision")
    if precision != "auto":
        return precision
    import torch

    on_gpu = str(trainer_cfg.get("accelerator", "auto")) in GPU_ACCELERATORS and torch.cuda.is_available()
    if not on_gpu:
        chosen, reason = "32-true", "not on a CUDA GPU"
    elif _native_bf16():
        chosen, reason = "bf16-mixed", f"{torch.cuda.get_device_name()} computes in bfloat16"
    else:
        chosen, reason = "32-true", f"{torch.cuda.get_device_name()} has no native bfloat16"
    log.info("trainer.precision=auto: %s (%s)", chosen, reason)
    return chosen


def _native_bf16() -> bool:
    """Whether the current CUDA device computes in bfloat16 natively (not emulated, which is slow)."""
    import torch

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument: it reports native support only
        return torch.cuda.is_bf16_supported()


def trainer_arguments(trainer_cfg: DictConfig, validates: bool = True) -> dict[str, Any]:
    """``cfg.trainer`` as ``L.Trainer`` keyword arguments, ``precision: auto`` resolved; without a validation
    split (``validates`` false: ``protocol=full_train_last_epoch``) no validation loop runs."""
    arguments = dict(trainer_cfg)
    if "precision" in arguments:
        arguments["precision"] = resolve_precision(trainer_cfg)
    if not validates:
        arguments.update(limit_val_batches=0, num_sanity_val_steps=0)
    return arguments


def stage_context(cfg: DictConfig, run_dir: Path | None, device: Any, precision: Any = None) -> StageContext:
    """What a method's stages may use: the device, the run folder and the teacher cache (whose teacher
    training runs on the trainer's accelerator and, when given, its resolved ``precision``)."""
    from divergence_lab.run.teacher_cache import load_or_train_teacher

    trainer_kwargs = {"accelerator": cfg.trainer.accelerator, "devices": 1, "deterministic": True}
    if precision is not None:
        trainer_kwargs["precision"] = precision

    record = run_dir / TEACHER_FILE if run_dir is not None else None

    def teacher(teacher_cfg: DictConfig, recipe: Any = None) -> Any:
        cache = cfg.paths.teacher_cache
        return load_or_train_teacher(teacher_cfg, cfg.data, cache, trainer_kwargs, record, recipe)

    return StageContext(device=device, run_dir=run_dir, teacher=teacher)


def is_interactive() -> bool:
    """A progress bar only for a single run in a terminal; sweeps, pipes and log files get epoch lines."""
    hydra = HydraConfig.get()
    return hydra.mode != RunMode.MULTIRUN and sys.stderr.isatty()


def _quiet_lightning() -> None:
    """Lightning's INFO lines repeat what the run prints itself (and advertise); keep its warnings."""
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", pattern)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_title(cfg: DictConfig) -> str:
    return " | ".join(str(x) for x in (cfg.method.name, divergence_label(cfg), f"seed {cfg.seed}") if x)


def continue_command(run_dir: Path) -> str:
    """The command that continues this run (or its sweep) in its own folder."""
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return rerun_command(sys.argv[1:], "hydra.sweep.dir", str(hydra.sweep.dir))
    return rerun_command(sys.argv[1:], "hydra.run.dir", str(run_dir))


def train(cfg: DictConfig) -> float:
    """Run one configured job; return ``cfg.optimized_metric`` (a validation metric; NaN for a run without a
    validation split) for sweepers."""
    started = time.time()
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    # a sweep's overrides were checked across all its jobs at launch (a key may be read by some jobs only)
    validate_settings(cfg, list(hydra.overrides.task) if hydra.mode == RunMode.RUN else ())
    settings = fingerprint_settings(cfg)
    check_run_dir(run_dir, settings)  # another config's folder: refused before anything is written
    if cfg.ckpt_path in ("auto", "fresh") and (finished := finished_record(run_dir)) is not None:
        print(f"[{run_title(cfg)}] finished earlier, nothing to do  ({run_dir})")
        return finished["metrics"].get(cfg.optimized_metric, math.nan)
    from divergence_lab.run.epoch_progress import labelled_job_output

    with ExitStack() as scope:
        if is_owner_process():  # DDP: rank 0 owns the folder and writes the record
            scope.enter_context(owned_folder(run_dir))  # another process here: FolderInUse, nothing written
        if hydra.mode == RunMode.MULTIRUN:  # parallel jobs' lines must be told apart
            scope.enter_context(labelled_job_output(job_label(cfg, hydra.job.get("num"))))
        return _run(cfg, run_dir, settings, started)


def _run(cfg: DictConfig, run_dir: Path, settings: dict[str, Any], started: float) -> float:
    """Record the attempt, fit and test; a signal ends it with one line and exit 128 + signal number."""
    mark_running(run_dir)
    if is_global_rank_zero():
        write_fingerprint(run_dir / RUN_FINGERPRINT_FILE, settings)
    set_position("start-up")
    try:
        with handled_signals():
            validate_divergence(cfg)
            record = fit_and_test(cfg, run_dir, started)
    except RunInterrupted as stop:
        where = current_position()
        mark_interrupted(run_dir, str(stop), where)
        rerun = continue_command(run_dir)
        print(f"dlab: interrupted at {where}; rerun: {rerun}", file=sys.stderr, flush=True)
        if in_sweep_worker():  # a pool process: it must not go on to a queued job of the stopping sweep
            release_all()
            end_worker_process(stop.exit_code)
        sys.exit(stop.exit_code)
    except Exception as error:
        mark_failed(run_dir, error)
        raise
    mark_finished(run_dir)
    return record["metrics"].get(cfg.optimized_metric, math.nan)


def fit_and_test(cfg: DictConfig, run_dir: Path, started: float) -> dict[str, Any]:
    """Train (or resume), test the selected checkpoint, write ``metrics.json``; return its content."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    from divergence_lab.run.epoch_progress import EpochProgress, TestingPosition
    from divergence_lab.run.resumption import EpochSeeding, RunSummary, cluster_plugins
    from divergence_lab.run.stages import run_stages
    from divergence_lab.run.teacher_cache import numerics
    from divergence_lab.run.threads import apply_threads

    hydra = HydraConfig.get()
    interactive = is_interactive()
    _quiet_lightning()
    log.info(apply_threads(cfg, hydra.launcher))
    rank_zero = is_global_rank_zero()
    if rank_zero:
        save_resolved_config(run_dir, cfg)

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)

    metric = cfg.optimized_metric
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    rule = selection_rule(cfg)  # None: the method tests its last epoch (GCD), no epoch is selected
    # best.ckpt: the epoch the rule selects; listed before last.ckpt, whose state then includes the choice
    best = SelectedCheckpoint(checkpoint_dir, rule) if rule is not None else None
    # No monitor: overwritten at the end of every epoch, so a stopped job loses at most one epoch.
    last = ModelCheckpoint(checkpoint_dir, filename="last", enable_version_counter=False)
    summary = RunSummary()
    title = run_title(cfg)
    checkpoints = [last] if best is None else [best, last]
    testing = TestingPosition()
    callbacks: list[Any] = [*checkpoints, summary, EpochSeeding(cfg.seed), EpochProgress(), testing]
    if rank_zero:
        callbacks.append(ReliabilityDiagram(run_dir, title))
    if interactive:
        callbacks.append(RichProgressBar())

    sweep_name = Path(hydra.sweep.dir).name if hydra.mode == RunMode.MULTIRUN else None
    loggers = build_loggers(cfg, run_dir, sweep_name)
    try:
        arguments = trainer_arguments(cfg.trainer, getattr(datamodule, "has_validation_split", True))
        trainer = L.Trainer(
            **arguments,
            default_root_dir=str(run_dir),
            logger=loggers,
            callbacks=callbacks,
            plugins=cluster_plugins(),
            enable_progress_bar=interactive,
            enable_model_summary=interactive,
        )
        outputs = run_stages(
            declared_stages(cfg, datamodule),
            stage_context(cfg, run_dir, trainer.strategy.root_device, arguments.get("precision")),
            run_dir,
            trainer.precision_plugin.forward_context,
            rank_zero,
            cfg.stage_wait_s,
            reuse=cfg.ckpt_path is not None,  # null: start over in place, stages too
            numerics=numerics(
                {"accelerator": cfg.trainer.accelerator, "precision": arguments.get("precision")}
            ),
        )
        module = build_module(cfg, datamodule, outputs)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_checkpoint(cfg.ckpt_path, run_dir))
        # test the selected checkpoint, or the last one for methods that report the last epoch (GCD);
        # read before testing: restoring the tested checkpoint restores the callbacks' state too
        if best is None:
            selected, selected_epoch = dict(summary.last_validation), summary.last_epoch
            tested_checkpoint = str(checkpoint_dir / LAST_CHECKPOINT)
        else:
            selected, selected_epoch = dict(best.selected_validation), best.selected_epoch
            tested_checkpoint = best.best_model_path
        final_train_loss = summary.last_train_loss
        sizes = split_sizes(datamodule)
        testing.announce("last" if best is None else "selected", selected_epoch, sizes["n_test"])
        (test_metrics,) = trainer.test(
            module,
            datamodule=datamodule,
            ckpt_path=tested_checkpoint,
            verbose=interactive,
            weights_only=False,
        )
        # val/acc where the method has an accuracy (language models report val/exact_match instead)
        accuracy = {"val/acc": selected["val/acc"]} if "val/acc" in selected else {}
        # no validation split (protocol=full_train_last_epoch): no validation metric to record
        optimized = {metric: selected[metric]} if metric in selected else {}
        metrics = {**test_metrics, **accuracy, **optimized, "train/loss": final_train_loss}
        tested = {
            "selected_epoch": selected_epoch,
            "checkpoint_selection": describe_selection(rule),
            **sizes,
            **class_results(module, run_dir, cfg.method.get("confusion_max_classes"), write=rank_zero),
        }
        record = write_metrics(run_dir, cfg, metrics, started, tested) if rank_zero else {"metrics": metrics}
        log_summary(loggers, {**record, **tested}, cfg)
    except BaseException:
        # failed, or interrupted: submitit raises SystemExit after requeueing a preempted job, while SLURM
        # is already stopping the job's other processes (W&B's service among them)
        close_loggers(loggers, interrupted=True)
        raise
    close_loggers(loggers)
    line = "  ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
    print(f"[{title}] {line}  ({run_dir})")
    return record
