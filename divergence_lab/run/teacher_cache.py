"""A disk cache of trained teachers, so a sweep of N students trains its teacher once.

A teacher is identified by a key: the first 16 hex digits of the SHA-256 of everything that decides its
weights and its reported accuracy (:func:`key_ingredients`):

* the teacher config (model, optimiser, epochs, seed, batch size) and the data config;
* the data: the data module's ``data_fingerprint()`` (dataset, split, and a hash of the tensors, or of
  the files' names, sizes and modification times for data read from disk) and the source of its code;
* the network: the source of its code, the built architecture's ``repr`` and its parameter shapes;
* the numerics (:func:`numerics`): torch's intra-op thread count, the torch version, the device type and
  the precision it trains under. Each can change the last bits of the weights (a reduction split over
  another number of threads adds in another order), and a distilled student inherits those bits; so a
  teacher is only ever shared by runs that would have trained the very same one.

So new data, an edited data module or an edited network trains a new teacher instead of loading a stale
one. The weights live in ``<cache_dir>/<key>/teacher.pt`` beside ``meta.json`` (the ingredients of the key
and the test metrics). ``cache_dir`` is ``paths.teacher_cache``: by default a per-user folder
(``$DLAB_TEACHER_CACHE``, else ``<$XDG_CACHE_HOME or ~/.cache>/divergence_lab/teachers``), so every
project and working directory of the user shares it. Weights are always loaded with
``torch.load(..., weights_only=True)``.

Loading a cached teacher only reads (no lock file, nothing touched), so a read-only cache serves every
teacher it holds. A teacher that must be trained needs a writable cache: that is checked before training,
and a cache that cannot be written is refused in one line (:class:`ConfigError`) naming the folder and
``paths.teacher_cache=...``. Jobs that train the same teacher at the same time serialise on a file lock
(``<key>.lock``): the first trains it, the others wait and then load it. An entry appears whole: its files
are written into a staging folder that is then renamed to ``<key>`` (a rename never leaves half a folder;
if another process's rename came first, its entry is kept).

Training keeps a resumable checkpoint of its last finished epoch in ``<cache_dir>/<key>.partial/`` (the
Lightning checkpoint, with the random streams as they were then). A job interrupted while training the
teacher, started again, continues from there with the same numbers as an uninterrupted training
(``[teacher] resuming teacher at epoch 3/30 ...``); the folder goes when the entry is saved. A checkpoint
left by training on another accelerator or precision is not continued: the teacher trains from its start.

A teacher trains on one device of the run's accelerator, under the run's precision (``trainer_kwargs``),
with ``deterministic=True``; the process-wide flags that sets are given back afterwards. The run's
``teacher.json`` records each teacher's key, network, test metrics and numerics.

What a teacher is built from and what trains it is its recipe (:mod:`divergence_lab.methods.recipes`: the
classifier recipe by default, the causal LM teacher's from :mod:`divergence_lab.methods.lm_kd`); this module
keeps the cache around it (key, lock, files, log lines) and the training service a recipe trains through
(:func:`fit_and_test`, bound to the run's trainer settings by :func:`fit_and_test_service`: the
``context.fit_and_test`` that :func:`divergence_lab.run.pipeline.stage_context` gives the stages).

Through the ``divergence_lab`` logger (console and the run's ``train.log``) training logs one progress
line per teacher epoch, and every load or training ends with one line giving the teacher's test accuracy.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch import Callback
from omegaconf import DictConfig, OmegaConf
from torch import nn

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.progress import StageProgress, format_duration
from divergence_lab.ground.record_format import read_teachers
from divergence_lab.methods.recipes import CLASSIFIER, TeacherRecipe, build_classifier, classifier_recipe
from divergence_lab.methods.stages import FitAndTest
from divergence_lab.run.epoch_progress import EpochProgress
from divergence_lab.run.record import write_json_atomically
from divergence_lab.run.stages import random_state, restore_random_state

log = logging.getLogger(__name__)

KEY_HEX_DIGITS = 16
WEIGHTS, META = "teacher.pt", "meta.json"
# packages whose classes' source is not hashed: it changes only with the installed version
FRAMEWORK_PACKAGES = frozenset({"builtins", "torch", "lightning"})
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"  # set by Lightning for deterministic cuBLAS
NO_SOURCE = "no source file"  # a class defined interactively: only its repr and shapes are fingerprinted
PARTIAL_SUFFIX = ".partial"  # <key>.partial/: the resumable checkpoint of a teacher being trained
STAGING_SUFFIX = ".staging"  # .<key>.<unique>.staging/: an entry being written, renamed to <key> when whole
RESUME_CHECKPOINT = "last.ckpt"  # in <key>.partial/: the Lightning checkpoint of the last finished epoch
RESUME_SETTINGS = "trainer.json"  # in <key>.partial/: the trainer settings that checkpoint was trained with
TEACHER_STAGE = "teacher"  # the progress label of teacher training
GPU_ACCELERATORS = ("gpu", "cuda")  # trainer accelerators that train on a CUDA device
DEFAULT_PRECISION = "32-true"  # Lightning's precision when the trainer sets none
# while a teacher of the cache trains: the folder of its resumable checkpoint (read by fit_and_test)
_resume_folder: ContextVar[Path | None] = ContextVar("teacher_resume_folder", default=None)


def teacher_data_config(teacher_cfg: DictConfig, data_cfg: DictConfig) -> DictConfig:
    """The data config the teacher trains on: the run's, with the teacher's own ``batch_size`` if it sets one.

    So a sweep over the student's batch size still shares one teacher.
    """
    if "batch_size" not in teacher_cfg:
        return data_cfg
    return OmegaConf.merge(data_cfg, {"batch_size": teacher_cfg.batch_size})


def numerics(trainer_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What decides the last bits of a trained teacher besides its config and data: torch's intra-op
    thread count now, the torch version, the device type the trainer's ``accelerator`` resolves to
    (``cpu``, ``cuda``, ...) and the ``precision`` it trains under (``32-true`` when unset)."""
    accelerator = str(trainer_kwargs.get("accelerator", "cpu"))
    if accelerator in GPU_ACCELERATORS or (accelerator == "auto" and torch.cuda.is_available()):
        device = "cuda"
    else:
        device = "cpu" if accelerator == "auto" else accelerator
    return {
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "device": device,
        "precision": str(trainer_kwargs.get("precision") or DEFAULT_PRECISION),
    }


def teacher_key(
    teacher_cfg: DictConfig, data_cfg: DictConfig, trainer_kwargs: dict[str, Any] | None = None
) -> str:
    """Stable 16-hex-digit key of everything that determines the trained classifier teacher
    (:func:`~divergence_lab.methods.recipes.classifier_recipe`), for training under ``trainer_kwargs``
    (default: this process's CPU in ``32-true``).

    Builds the data module and the network to fingerprint them; the caller's random state is untouched.
    """
    with _preserved_rng_state():
        datamodule, net = build_classifier(teacher_cfg, data_cfg)
    settings = {"accelerator": "cpu"} if trainer_kwargs is None else trainer_kwargs
    return _key(key_ingredients(teacher_cfg, data_cfg, datamodule, net, trained_under=numerics(settings)))


def key_ingredients(
    teacher_cfg: DictConfig,
    data_cfg: DictConfig,
    datamodule: Any,
    net: nn.Module,
    recipe: str = CLASSIFIER,
    trained_under: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the key hashes (and ``meta.json`` records): both configs, the data and network fingerprints,
    the numerics the teacher trains under (``trained_under``, :func:`numerics`), and the recipe's name
    unless it is the classifier's.

    ``datamodule`` is the set-up data module of ``data_cfg``; ``net`` the network built from
    ``teacher_cfg.model`` for it (its weights do not matter, only its definition).
    """
    ingredients = {
        "teacher": OmegaConf.to_container(teacher_cfg, resolve=True),
        "data": OmegaConf.to_container(data_cfg, resolve=True),
        "fingerprints": {**data_fingerprints(datamodule), **network_fingerprints(net)},
        "numerics": trained_under if trained_under is not None else {},
    }
    return ingredients if recipe == CLASSIFIER else {**ingredients, "recipe": recipe}


def data_fingerprints(datamodule: Any) -> dict[str, Any]:
    """The data module's own ``data_fingerprint()`` (the data served) and the SHA-256 of its classes'
    source files (the code that loads, splits, orders and augments it)."""
    return {"data": datamodule.data_fingerprint(), "data_code": source_digests([type(datamodule)])}


def network_fingerprints(net: nn.Module) -> dict[str, Any]:
    """The SHA-256 of the source files of every class in ``net`` (its ``forward`` among them), of its
    ``repr`` (layers, widths, options) and of its parameter and buffer shapes (all its state)."""
    shapes = {name: list(tensor.shape) for name, tensor in net.state_dict().items()}
    return {
        "network_code": source_digests({type(module) for module in net.modules()}),
        "architecture": _sha256(repr(net).encode()),
        "parameter_shapes": _sha256(json.dumps(shapes).encode()),
    }


def source_digests(classes: Iterable[type]) -> dict[str, str]:
    """``{module name: SHA-256 of its source file}`` for the modules defining ``classes`` and their bases.

    Framework classes (``FRAMEWORK_PACKAGES``) are left out. Keyed by module name rather than path, so an
    editable and a regular install of the same code give the same digests.
    """
    digests = {}
    for cls in classes:
        for base in cls.__mro__:
            if base.__module__.partition(".")[0] not in FRAMEWORK_PACKAGES:
                digests[base.__module__] = _source_digest(base)
    return dict(sorted(digests.items()))


def load_or_train_teacher(
    teacher_cfg: DictConfig,
    data_cfg: DictConfig,
    cache_dir: str | os.PathLike,
    trainer_kwargs: dict[str, Any],
    record: Path | None = None,
    recipe: TeacherRecipe | None = None,
) -> nn.Module:
    """Return the frozen teacher described by ``teacher_cfg``, training and caching it when missing.

    Logs one line with its test accuracy and where it came from; with ``record`` (a run's ``teacher.json``)
    also adds the teacher's key, network and test metrics there, for the report's provenance block.
    ``recipe``: how this kind of teacher is built and trained, through a fit-and-test service under
    ``trainer_kwargs`` (default: a classifier trained with cross-entropy by :func:`fit_and_test_service`,
    :func:`~divergence_lab.methods.recipes.classifier_recipe`).
    """
    recipe = recipe or classifier_recipe(fit_and_test_service(trainer_kwargs))
    data_cfg = teacher_data_config(teacher_cfg, data_cfg)
    cache = Path(cache_dir)
    with _preserved_rng_state():
        # the teacher depends on its own seed only, never on the random state of the job that trains it
        L.seed_everything(teacher_cfg.seed, workers=True, verbose=False)
        datamodule, net = recipe.build(teacher_cfg, data_cfg)
        trained_under = numerics(trainer_kwargs)
        ingredients = key_ingredients(teacher_cfg, data_cfg, datamodule, net, recipe.name, trained_under)
        key = _key(ingredients)
        entry = cache / key
        if (entry / WEIGHTS).is_file():  # entries appear whole (a rename): reading needs no lock
            meta = _load(net, entry)
            outcome = f"loaded from {entry}"
        else:
            check_writable(cache)
            with FileLock(str(cache / f"{key}.lock")):
                if (entry / WEIGHTS).is_file():  # trained by another job while this one waited
                    meta = _load(net, entry)
                    outcome = f"loaded from {entry}"
                else:
                    log.info("Training teacher %s (cached for later runs)", key)
                    started = time.monotonic()
                    partial = cache / f"{key}{PARTIAL_SUFFIX}"
                    with _resumable_in(partial, trainer_kwargs):
                        metrics = recipe.train(net, teacher_cfg, datamodule)
                    meta = {**ingredients, "test_metrics": metrics}
                    outcome = f"trained in {format_duration(time.monotonic() - started)}, cached at {entry}"
                    _save(net, entry, meta)
                    shutil.rmtree(partial, ignore_errors=True)
    metrics = meta["test_metrics"]
    shown = f"test acc {metrics['test/acc']:.4f}" if "test/acc" in metrics else _listed(metrics)
    log.info("%s: %s, %s", _describe(key, net, teacher_cfg), shown, outcome)
    if record is not None:
        _record_teacher(record, key, teacher_cfg, meta["test_metrics"], trained_under)
    net.eval()
    net.requires_grad_(False)
    return net


def _listed(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())) or "no test metrics"


def _record_teacher(
    path: Path,
    key: str,
    teacher_cfg: DictConfig,
    test_metrics: dict[str, float],
    trained_under: dict[str, Any],
) -> None:
    """Add ``{key: {"model": <network class>, "test_metrics": {...}, "numerics": {...}}}`` to the run's
    ``teacher.json``."""
    teachers = read_teachers(path)
    model = str(teacher_cfg.model.get("_target_", "?")).rsplit(".", 1)[-1]
    teachers[key] = {"model": model, "test_metrics": dict(test_metrics), "numerics": dict(trained_under)}
    write_json_atomically(path, teachers)


def _key(ingredients: dict[str, Any]) -> str:
    return _sha256(json.dumps(ingredients, sort_keys=True).encode())[:KEY_HEX_DIGITS]


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _source_digest(cls: type) -> str:
    """SHA-256 of the file that defines ``cls`` as it is on disk now; ``NO_SOURCE`` when there is none."""
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:  # a class of ``__main__`` in an interactive session
        path = None
    return _sha256(Path(path).read_bytes()) if path else NO_SOURCE


def _describe(key: str, net: nn.Module, teacher_cfg: DictConfig) -> str:
    """``teacher 3f2a9c0d1e2b4a5f (MLP, 85,002 parameters, 30 epochs)``."""
    size = sum(parameter.numel() for parameter in net.parameters())
    return f"teacher {key} ({type(net).__name__}, {size:,} parameters, {teacher_cfg.max_epochs} epochs)"


def _load(net: nn.Module, entry: Path) -> dict[str, Any]:
    """Load the cached weights into ``net``; return the entry's ``meta.json``."""
    net.load_state_dict(torch.load(entry / WEIGHTS, map_location="cpu", weights_only=True))
    return json.loads((entry / META).read_text())


def check_writable(cache: Path) -> None:
    """Refuse, in one line, a teacher cache where a teacher cannot be saved: create the folder if needed
    and a probe file in it (and remove it). Nothing is trained before this passes."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-check-", dir=cache)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(
            f"the teacher cache {cache} cannot be written ({reason}) and this teacher is not in it yet;"
            " point paths.teacher_cache=<a writable folder> elsewhere (a read-only cache serves only the"
            " teachers it holds)"
        ) from None


def _save(net: nn.Module, entry: Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json`` and the weights into a staging folder, then rename it to ``entry``: readers see
    no entry or a whole one. An entry without weights (left by an older version) is replaced; one that
    another process saved meanwhile is kept (it holds the same teacher)."""
    staging = entry.parent / f".{entry.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{STAGING_SUFFIX}"
    staging.mkdir()
    try:
        (staging / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        torch.save(net.state_dict(), staging / WEIGHTS)
        if entry.is_dir() and not (entry / WEIGHTS).is_file():
            shutil.rmtree(entry)
        try:
            os.rename(staging, entry)
        except OSError:
            if not (entry / WEIGHTS).is_file():
                raise
            log.info("teacher %s was saved meanwhile by another process; keeping its entry", entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def _resumable_in(folder: Path, trainer_kwargs: dict[str, Any]) -> Iterator[None]:
    """Let :func:`fit_and_test` keep and resume a checkpoint of the teacher's last finished epoch in
    ``folder``; one left by other trainer settings (accelerator, precision) is discarded first."""
    settings = {name: str(value) for name, value in sorted(trainer_kwargs.items())}
    try:
        recorded = json.loads((folder / RESUME_SETTINGS).read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded != settings:
        if recorded is not None:
            log.info("[teacher] %s was trained with other settings (%s): starting over", folder, recorded)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        write_json_atomically(folder / RESUME_SETTINGS, settings)
    token = _resume_folder.set(folder)
    try:
        yield
    finally:
        _resume_folder.reset(token)


class EpochResumption(Callback):
    """Saves a resumable checkpoint at the end of every training epoch (atomically, before the epoch's
    progress line) and, on a resumed fit, logs the resumption and sets the random streams as they were when
    that checkpoint was saved, right before the first resumed epoch: the rest of the training then equals
    an uninterrupted one."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path, self.stage = path, stage
        self.pending_random_state: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"random_state": random_state()}  # called while the checkpoint is written

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending_random_state = state_dict["random_state"]

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self.pending_random_state is not None and trainer.is_global_zero:
            StageProgress(self.stage, trainer.max_epochs).resuming(trainer.current_epoch)

    def _restore(self) -> None:
        if self.pending_random_state is not None:
            restore_random_state(self.pending_random_state)
            self.pending_random_state = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._restore()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._restore()  # where the loop resumes without calling on_train_epoch_start

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        staging = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(staging, weights_only=False)
        os.replace(staging, self.path)


@contextmanager
def _preserved_rng_state() -> Iterator[None]:
    """Leave the caller's random streams untouched, whether the teacher was loaded or trained.

    Without this the student's initialisation would depend on whether its teacher was already cached.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def fit_and_test_service(trainer_kwargs: dict[str, Any]) -> FitAndTest:
    """The training service (:class:`~divergence_lab.methods.stages.FitAndTest`) that recipes and stages
    are given: :func:`fit_and_test` under ``trainer_kwargs``."""

    def service(
        module: L.LightningModule, datamodule: Any, max_epochs: int, progress: Mapping[str, str]
    ) -> dict[str, float]:
        return fit_and_test(module, datamodule, max_epochs, trainer_kwargs, progress)

    return service


def fit_and_test(
    module: L.LightningModule,
    datamodule: Any,
    max_epochs: int,
    trainer_kwargs: dict[str, Any],
    progress: Mapping[str, str],
) -> dict[str, float]:
    """Train a LightningModule in this process (one device, no logger, no checkpoints, one ``[teacher]``
    progress line per epoch showing ``progress``: label -> logged metric) and return its test metrics; the
    process-wide torch flags are given back.

    Inside the teacher cache's training (:func:`load_or_train_teacher`) the training keeps a checkpoint of
    its last finished epoch (:class:`EpochResumption`) and continues from one it finds."""
    folder = _resume_folder.get()
    callbacks: list[Any] = [EpochProgress(TEACHER_STAGE, progress)]
    resume_from = None
    if folder is not None:
        checkpoint = folder / RESUME_CHECKPOINT
        callbacks.insert(0, EpochResumption(checkpoint, TEACHER_STAGE))  # saved before the progress line
        resume_from = str(checkpoint) if _resumable(checkpoint) else None
    with _restored_torch_flags():
        trainer = L.Trainer(
            **trainer_kwargs,
            # one process, whatever the job runs in: not the SLURM world of a DDP job, no SLURM requeueing
            plugins=[LightningEnvironment()],
            max_epochs=max_epochs,
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return {name: float(value) for name, value in results.items()}


def _resumable(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` exists and loads with ``weights_only=True``; one that does not is removed
    (with a line saying so) and the teacher trains from its first epoch."""
    if not checkpoint.is_file():
        return False
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # an unreadable or foreign file: train from the start rather than fail
        log.info("[teacher] %s cannot be resumed (%s): training from the first epoch", checkpoint, error)
        checkpoint.unlink(missing_ok=True)
        return False
    return True


@contextmanager
def _restored_torch_flags() -> Iterator[None]:
    """Give back the process-wide flags that building a Trainer sets (``deterministic=True``: deterministic
    algorithms, cuDNN benchmarking off, ``CUBLAS_WORKSPACE_CONFIG``) as they were.

    The run's own Trainer is built before its stages, so without this a teacher trained here would leave a
    ``trainer=gpu`` run (``deterministic: false``) training its student in deterministic mode, but only
    when the teacher was not in the cache yet.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    workspace = os.environ.get(CUBLAS_WORKSPACE)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        if workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE, None)
        else:
            os.environ[CUBLAS_WORKSPACE] = workspace
