"""A disk cache of trained teachers, so a sweep of N students trains its teacher once.

A teacher is identified by a key: the first 16 hex digits of the SHA-256 of everything that decides its
weights and its reported accuracy (:func:`key_ingredients`):

* the teacher config (model, optimiser, epochs, seed, batch size) and the data config;
* the data: the data module's ``data_fingerprint()`` (dataset, split, and a hash of the tensors, or of
  the files' names, sizes and modification times for data read from disk) and the source of its code;
* the network: the source of its code, the built architecture's ``repr`` and its parameter shapes.

So new data, an edited data module or an edited network trains a new teacher instead of loading a stale
one. The weights live in ``<cache_dir>/<key>/teacher.pt`` beside ``meta.json`` (the ingredients of the key
and the test metrics). ``cache_dir`` is ``paths.teacher_cache``: by default a per-user folder
(``$DLAB_TEACHER_CACHE``, else ``<$XDG_CACHE_HOME or ~/.cache>/divergence_lab/teachers``), so every
project and working directory of the user shares it. Jobs that need the same teacher at the same time
serialise on a file lock (``<key>.lock``): the first trains and saves it atomically, the others wait and
then load it. Weights are always loaded with ``torch.load(..., weights_only=True)``.

A teacher trains on one device of the run's accelerator, under the run's precision (``trainer_kwargs``),
with ``deterministic=True``; the process-wide flags that sets are given back afterwards. Accelerator and
precision are not part of the key: a teacher trained on a GPU in ``bf16-mixed`` serves CPU runs too.

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
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from lightning.fabric.plugins.environments import LightningEnvironment
from omegaconf import DictConfig, OmegaConf
from torch import nn

from divergence_lab.data import instantiate_datamodule
from divergence_lab.methods.cross_entropy import CrossEntropyModule
from divergence_lab.methods.progress import format_duration
from divergence_lab.models import build_network
from divergence_lab.run.epoch_progress import EpochProgress
from divergence_lab.run.record import torch_save_atomically, write_json_atomically

log = logging.getLogger(__name__)

KEY_HEX_DIGITS = 16
WEIGHTS, META = "teacher.pt", "meta.json"
# packages whose classes' source is not hashed: it changes only with the installed version
FRAMEWORK_PACKAGES = frozenset({"builtins", "torch", "lightning"})
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"  # set by Lightning for deterministic cuBLAS
NO_SOURCE = "no source file"  # a class defined interactively: only its repr and shapes are fingerprinted
# the epoch metrics of CrossEntropyModule shown on the teacher's progress lines, by label
PROGRESS_METRICS = {"loss": "train/loss", "val acc": "val/acc"}  # label -> metric on the teacher's lines
CLASSIFIER = "classifier"  # the recipe of the vision and tabular teachers (its name is not in their keys)


@dataclass(frozen=True)
class TeacherRecipe:
    """How a kind of teacher is built and trained; the cache (key, lock, files, log lines) is shared.

    ``build(teacher_cfg, data_cfg) -> (set-up data module, untrained network)``;
    ``train(net, teacher_cfg, datamodule, trainer_kwargs) -> test metrics`` (with ``test/acc`` when the
    teacher has an accuracy). Any recipe but :data:`CLASSIFIER_RECIPE` adds its name to the key.
    """

    name: str
    build: Callable[[DictConfig, DictConfig], tuple[Any, nn.Module]]
    train: Callable[[nn.Module, DictConfig, Any, dict[str, Any]], dict[str, float]]


def teacher_data_config(teacher_cfg: DictConfig, data_cfg: DictConfig) -> DictConfig:
    """The data config the teacher trains on: the run's, with the teacher's own ``batch_size`` if it sets one.

    So a sweep over the student's batch size still shares one teacher.
    """
    if "batch_size" not in teacher_cfg:
        return data_cfg
    return OmegaConf.merge(data_cfg, {"batch_size": teacher_cfg.batch_size})


def teacher_key(teacher_cfg: DictConfig, data_cfg: DictConfig) -> str:
    """Stable 16-hex-digit key of everything that determines the trained teacher.

    Builds the data module and the network to fingerprint them; the caller's random state is untouched.
    """
    with _preserved_rng_state():
        datamodule, net = _build(teacher_cfg, data_cfg)
    return _key(key_ingredients(teacher_cfg, data_cfg, datamodule, net))


def key_ingredients(
    teacher_cfg: DictConfig, data_cfg: DictConfig, datamodule: Any, net: nn.Module, recipe: str = CLASSIFIER
) -> dict[str, Any]:
    """What the key hashes (and ``meta.json`` records): both configs and the data and network fingerprints,
    and the recipe's name unless it is the classifier's.

    ``datamodule`` is the set-up data module of ``data_cfg``; ``net`` the network built from
    ``teacher_cfg.model`` for it (its weights do not matter, only its definition).
    """
    ingredients = {
        "teacher": OmegaConf.to_container(teacher_cfg, resolve=True),
        "data": OmegaConf.to_container(data_cfg, resolve=True),
        "fingerprints": {**data_fingerprints(datamodule), **network_fingerprints(net)},
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
    ``recipe``: how this kind of teacher is built and trained (default: a classifier trained with
    cross-entropy, :data:`CLASSIFIER_RECIPE`).
    """
    recipe = recipe or CLASSIFIER_RECIPE
    data_cfg = teacher_data_config(teacher_cfg, data_cfg)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    with _preserved_rng_state():
        # the teacher depends on its own seed only, never on the random state of the job that trains it
        L.seed_everything(teacher_cfg.seed, workers=True, verbose=False)
        datamodule, net = recipe.build(teacher_cfg, data_cfg)
        ingredients = key_ingredients(teacher_cfg, data_cfg, datamodule, net, recipe.name)
        key = _key(ingredients)
        entry = cache / key
        with FileLock(str(cache / f"{key}.lock")):
            if (entry / WEIGHTS).exists():
                meta = _load(net, entry)
                outcome = f"loaded from {entry}"
            else:
                log.info("Training teacher %s (cached for later runs)", key)
                started = time.monotonic()
                metrics = recipe.train(net, teacher_cfg, datamodule, trainer_kwargs)
                meta = {**ingredients, "test_metrics": metrics}
                outcome = f"trained in {format_duration(time.monotonic() - started)}, cached at {entry}"
                _save(net, entry, meta)
    metrics = meta["test_metrics"]
    shown = f"test acc {metrics['test/acc']:.4f}" if "test/acc" in metrics else _listed(metrics)
    log.info("%s: %s, %s", _describe(key, net, teacher_cfg), shown, outcome)
    if record is not None:
        _record_teacher(record, key, teacher_cfg, meta["test_metrics"])
    net.eval()
    net.requires_grad_(False)
    return net


def _listed(metrics: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())) or "no test metrics"


def _record_teacher(path: Path, key: str, teacher_cfg: DictConfig, test_metrics: dict[str, float]) -> None:
    """Add ``{key: {"model": <network class>, "test_metrics": {...}}}`` to the run's ``teacher.json``."""
    try:
        teachers = json.loads(path.read_text())
    except (OSError, ValueError):
        teachers = {}
    model = str(teacher_cfg.model.get("_target_", "?")).rsplit(".", 1)[-1]
    teachers[key] = {"model": model, "test_metrics": dict(test_metrics)}
    write_json_atomically(path, teachers)


def _build(teacher_cfg: DictConfig, data_cfg: DictConfig) -> tuple[Any, nn.Module]:
    """The set-up data module the teacher trains on and its (untrained) network."""
    datamodule = instantiate_datamodule(data_cfg, seed=teacher_cfg.seed)
    return datamodule, build_network(teacher_cfg.model, datamodule)


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


def _save(net: nn.Module, entry: Path, meta: dict[str, Any]) -> None:
    """Write ``meta.json``, then the weights atomically: an entry with weights is always complete."""
    entry.mkdir(exist_ok=True)
    (entry / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    torch_save_atomically(net.state_dict(), entry / WEIGHTS)


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


def fit_and_test(
    module: L.LightningModule,
    datamodule: Any,
    max_epochs: int,
    trainer_kwargs: dict[str, Any],
    progress: dict[str, str] = PROGRESS_METRICS,
) -> dict[str, float]:
    """Train a teacher's LightningModule in this process (one device, no logger, no checkpoints, one
    progress line per epoch showing ``progress``: label -> logged metric) and return its test metrics; the
    process-wide torch flags are given back."""
    with _restored_torch_flags():
        trainer = L.Trainer(
            **trainer_kwargs,
            # one process, whatever the job runs in: not the SLURM world of a DDP job, no SLURM requeueing
            plugins=[LightningEnvironment()],
            max_epochs=max_epochs,
            callbacks=[EpochProgress("teacher", progress)],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(module, datamodule=datamodule)
        (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return {name: float(value) for name, value in results.items()}


def _train_classifier(
    net: nn.Module, teacher_cfg: DictConfig, datamodule: Any, trainer_kwargs: dict[str, Any]
) -> dict[str, float]:
    """Train ``net`` with cross-entropy; return its test metrics (``test/acc`` ...)."""
    module = CrossEntropyModule(
        net, datamodule.num_classes, dict(teacher_cfg.optimizer), teacher_cfg.max_epochs
    )
    return fit_and_test(module, datamodule, teacher_cfg.max_epochs, trainer_kwargs)


CLASSIFIER_RECIPE = TeacherRecipe(CLASSIFIER, _build, _train_classifier)


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
