"""One training run as a short linear recipe: check -> seed -> data -> trainer -> the method's stages ->
its module -> fit -> test -> metrics.json.

The stages (:mod:`divergence_lab.run.stages`) run on the trainer's device and precision, and a resumed run
loads their saved outputs instead of running them again. They receive the run layer's services through
:func:`stage_context`: the teacher cache and ``fit_and_test``, which fits and tests a module for a stage or a
teacher recipe (:mod:`divergence_lab.methods.recipes`). ``trainer.precision: auto`` (``trainer=gpu``) is
resolved when the Trainer is built (:func:`resolve_precision`): ``bf16-mixed`` on a CUDA GPU with native
bfloat16, else ``32-true``; teachers and stages train under the same precision.

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from divergence_lab.config.checks import check_method_settings, validate_divergence, validate_settings
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
from divergence_lab.methods.stages import StageContext, StageOutput, build_module, declared_stages
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
from divergence_lab.run.loggers import build_loggers, close_loggers, log_media, log_summary
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

if TYPE_CHECKING:
    from divergence_lab.metrics.selection import SelectionRule
    from divergence_lab.run.epoch_progress import TestingPosition
    from divergence_lab.run.resumption import RunSummary

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
    """What a method's stages may use: the device, the run folder, the teacher cache, and the service that
    fits and tests a module (:func:`~divergence_lab.run.teacher_cache.fit_and_test_service`, what a teacher
    recipe trains through). Both train on one device of the trainer's accelerator, deterministically and,
    when given, under its resolved ``precision``."""
    from divergence_lab.run.teacher_cache import fit_and_test_service, load_or_train_teacher

    trainer_kwargs = {"accelerator": cfg.trainer.accelerator, "devices": 1, "deterministic": True}
    if precision is not None:
        trainer_kwargs["precision"] = precision

    record = run_dir / TEACHER_FILE if run_dir is not None else None

    def teacher(teacher_cfg: DictConfig, recipe: Any = None) -> Any:
        cache = cfg.paths.teacher_cache
        return load_or_train_teacher(teacher_cfg, cfg.data, cache, trainer_kwargs, record, recipe)

    service = fit_and_test_service(trainer_kwargs)
    return StageContext(device=device, run_dir=run_dir, teacher=teacher, fit_and_test=service)


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
            check_method_settings(cfg)
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
    """Train (or resume), test the selected checkpoint, write ``metrics.json``; return its content.

    Once the loggers are open they are closed whatever happens: as interrupted when a step fails or the job
    is stopped (submitit raises SystemExit after requeueing a preempted job, while SLURM is already stopping
    the job's other processes, W&B's service among them).
    """
    import lightning as L

    hydra = HydraConfig.get()
    interactive = is_interactive()
    rank_zero = is_global_rank_zero()
    prepare_process(cfg, run_dir, hydra.launcher, rank_zero)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    callbacks = run_callbacks(cfg, run_dir, rank_zero, interactive)
    loggers = open_loggers(cfg, run_dir, hydra)
    try:
        arguments = trainer_arguments(cfg.trainer, getattr(datamodule, "has_validation_split", True))
        trainer = build_trainer(arguments, run_dir, loggers, callbacks.all, interactive)
        outputs = run_method_stages(cfg, run_dir, datamodule, trainer, arguments.get("precision"), rank_zero)
        module = build_module(cfg, datamodule, outputs)
        trainer.fit(module, datamodule=datamodule, ckpt_path=resolve_checkpoint(cfg.ckpt_path, run_dir))
        tested = callbacks.tested_epoch()  # before testing, which restores the callbacks' state too
        sizes = split_sizes(datamodule)
        test_metrics = run_test(
            trainer, module, datamodule, tested, sizes["n_test"], callbacks.testing, interactive
        )
        metrics = reported_metrics(test_metrics, tested, cfg.optimized_metric)
        facts = reported_facts(cfg, run_dir, module, tested, sizes, write=rank_zero)
        record = write_metrics(run_dir, cfg, metrics, started, facts) if rank_zero else {"metrics": metrics}
        log_summary(loggers, {**record, **facts}, cfg, run_dir)
        log_media(loggers, {**record, **facts}, run_dir, run_title(cfg))
    except BaseException:
        close_loggers(loggers, interrupted=True)
        raise
    close_loggers(loggers)
    print(result_line(cfg, record, run_dir))
    return record


def prepare_process(cfg: DictConfig, run_dir: Path, launcher: Any, rank_zero: bool) -> None:
    """Quiet Lightning's repeated lines, set this process's thread counts (one line saying so) and, on rank 0,
    save the resolved config in the run folder."""
    from divergence_lab.run.threads import apply_threads

    _quiet_lightning()
    log.info(apply_threads(cfg, launcher))
    if rank_zero:
        save_resolved_config(run_dir, cfg)


@dataclass(frozen=True)
class EpochToTest:
    """The checkpoint to test and what the record keeps of its epoch.

    ``which``: ``selected`` (by the rule) or ``last``; ``validation``: the epoch's validation metrics;
    ``train_loss``: the final training loss; ``rule``: the ``checkpoint_selection`` entry of ``metrics.json``.
    """

    which: str
    epoch: int
    checkpoint: str
    validation: dict[str, float]
    train_loss: float
    rule: str


@dataclass(frozen=True)
class RunCallbacks:
    """The run Trainer's callbacks (``all``, in order), with those read back after fitting.

    ``best`` saves ``best.ckpt``, the epoch the rule selects (None: the method tests its last epoch, GCD, and
    no epoch is selected); ``summary`` keeps the last epoch's numbers; ``testing`` announces what is tested.
    """

    checkpoint_dir: Path
    rule: SelectionRule | None
    best: SelectedCheckpoint | None
    summary: RunSummary
    testing: TestingPosition
    all: list[Any]

    def tested_epoch(self) -> EpochToTest:
        """The selected epoch's checkpoint, or the last one for methods that report the last epoch. Read it
        before testing: restoring the tested checkpoint restores the callbacks' state too."""
        if self.best is None:
            validation, epoch = dict(self.summary.last_validation), self.summary.last_epoch
            checkpoint, which = str(self.checkpoint_dir / LAST_CHECKPOINT), "last"
        else:
            validation, epoch = dict(self.best.selected_validation), self.best.selected_epoch
            checkpoint, which = self.best.best_model_path, "selected"
        rule = describe_selection(self.rule)
        return EpochToTest(which, epoch, checkpoint, validation, self.summary.last_train_loss, rule)


def run_callbacks(cfg: DictConfig, run_dir: Path, rank_zero: bool, interactive: bool) -> RunCallbacks:
    """The checkpoints (``best.ckpt`` listed before ``last.ckpt``, whose state then includes the choice),
    the run summary, per-epoch seeding, the progress lines and the testing position; on rank 0 the
    reliability diagram, in a terminal a progress bar; in a job of an Optuna trial the per-epoch reports
    to the trial, which stop training when the trial is pruned (:mod:`divergence_lab.run.trial_reports`)."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

    from divergence_lab.run.epoch_progress import EpochProgress, TestingPosition
    from divergence_lab.run.resumption import EpochSeeding, RunSummary
    from divergence_lab.run.trial_reports import trial_reports

    checkpoint_dir = run_dir / CHECKPOINT_DIR
    rule = selection_rule(cfg)
    best = SelectedCheckpoint(checkpoint_dir, rule) if rule is not None else None
    # No monitor: overwritten at the end of every epoch, so a stopped job loses at most one epoch.
    last = ModelCheckpoint(checkpoint_dir, filename="last", enable_version_counter=False)
    summary = RunSummary()
    checkpoints = [last] if best is None else [best, last]
    testing = TestingPosition()
    callbacks: list[Any] = [*checkpoints, summary, EpochSeeding(cfg.seed), EpochProgress(), testing]
    if rank_zero:
        callbacks.append(ReliabilityDiagram(run_dir, run_title(cfg)))
    if interactive:
        callbacks.append(RichProgressBar())
    if (reports := trial_reports(cfg.optimized_metric, rank_zero)) is not None:
        callbacks.append(reports)
    return RunCallbacks(checkpoint_dir, rule, best, summary, testing, callbacks)


def open_loggers(cfg: DictConfig, run_dir: Path, hydra: Any) -> list[Any]:
    """The run's loggers; in a sweep they are grouped by the sweep folder's name. The job's own overrides
    are its recorded command line."""
    sweep_name = Path(hydra.sweep.dir).name if hydra.mode == RunMode.MULTIRUN else None
    return build_loggers(cfg, run_dir, sweep_name, list(hydra.overrides.task))


def build_trainer(
    arguments: dict[str, Any], run_dir: Path, loggers: list[Any], callbacks: list[Any], interactive: bool
) -> Any:
    """The run's ``L.Trainer`` (``arguments``: :func:`trainer_arguments`), writing into ``run_dir``, with
    the cluster's plugins; a progress bar and model summary only in a terminal."""
    import lightning as L

    from divergence_lab.run.resumption import cluster_plugins

    return L.Trainer(
        **arguments,
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=callbacks,
        plugins=cluster_plugins(),
        enable_progress_bar=interactive,
        enable_model_summary=interactive,
    )


def run_method_stages(
    cfg: DictConfig, run_dir: Path, datamodule: Any, trainer: Any, precision: Any, rank_zero: bool
) -> dict[str, StageOutput]:
    """The outputs of the method's stages, run on the trainer's device and ``precision`` (or loaded from the
    run folder on resume; ``ckpt_path=null`` starts over in place, stages too)."""
    from divergence_lab.run.stages import run_stages
    from divergence_lab.run.teacher_cache import numerics

    return run_stages(
        declared_stages(cfg, datamodule),
        stage_context(cfg, run_dir, trainer.strategy.root_device, precision),
        run_dir,
        trainer.precision_plugin.forward_context,
        rank_zero,
        cfg.stage_wait_s,
        reuse=cfg.ckpt_path is not None,
        numerics=numerics({"accelerator": cfg.trainer.accelerator, "precision": precision}),
    )


def run_test(
    trainer: Any,
    module: Any,
    datamodule: Any,
    tested: EpochToTest,
    n_test: int,
    testing: TestingPosition,
    interactive: bool,
) -> dict[str, float]:
    """Test ``tested``'s checkpoint on the ``n_test`` test examples after one line naming it; return the
    test metrics."""
    testing.announce(tested.which, tested.epoch, n_test)
    (test_metrics,) = trainer.test(
        module,
        datamodule=datamodule,
        ckpt_path=tested.checkpoint,
        verbose=interactive,
        weights_only=False,
    )
    return test_metrics


def reported_metrics(test_metrics: dict[str, float], tested: EpochToTest, metric: str) -> dict[str, float]:
    """The metrics of ``metrics.json``: the test metrics, the tested epoch's ``val/acc`` where the method has
    an accuracy (language models report ``val/exact_match`` instead) and its ``metric`` (none without a
    validation split: ``protocol=full_train_last_epoch``), and the final training loss."""
    accuracy = {"val/acc": tested.validation["val/acc"]} if "val/acc" in tested.validation else {}
    optimized = {metric: tested.validation[metric]} if metric in tested.validation else {}
    return {**test_metrics, **accuracy, **optimized, "train/loss": tested.train_loss}


def reported_facts(
    cfg: DictConfig, run_dir: Path, module: Any, tested: EpochToTest, sizes: dict[str, int], write: bool
) -> dict[str, Any]:
    """What ``metrics.json`` records of the test besides its metrics: the tested epoch and the rule that chose
    it, the split sizes, the per-class accuracies (with ``write``: ``confusion.json`` too), and in a job of
    an Optuna trial that pruning stopped, ``"pruned": {"at_epoch": e}``."""
    from divergence_lab.run.trial_reports import pruned_entry

    return {
        "selected_epoch": tested.epoch,
        "checkpoint_selection": tested.rule,
        **sizes,
        **class_results(module, run_dir, cfg.method.get("confusion_max_classes"), write=write),
        **pruned_entry(),
    }


def result_line(cfg: DictConfig, record: dict[str, Any], run_dir: Path) -> str:
    """``[kd | kl | seed 0] test/acc=0.9582  ...  (<run dir>)``: the run's one closing line."""
    line = "  ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
    return f"[{run_title(cfg)}] {line}  ({run_dir})"
