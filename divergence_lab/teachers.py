"""A disk cache of trained teachers, so a sweep of N students trains its teacher once.

A teacher is identified by a key: the SHA-256 of its model, optimiser, epochs and seed together with the
data config. Its weights live in ``<cache_dir>/<key>/teacher.pt`` beside ``meta.json`` (the config that
produced it and its test accuracy). Jobs that need the same teacher at the same time serialise on a file
lock (``<key>.lock``): the first trains and saves it atomically, the others wait and then load it.
Weights are always loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
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
from divergence_lab.methods.teacher import CrossEntropyModule
from divergence_lab.models import build_network

log = logging.getLogger(__name__)


def teacher_data_config(teacher_cfg: DictConfig, data_cfg: DictConfig) -> DictConfig:
    """The data config the teacher trains on: the run's, with the teacher's own ``batch_size`` if it sets one.

    So a sweep over the student's batch size still shares one teacher.
    """
    if "batch_size" not in teacher_cfg:
        return data_cfg
    return OmegaConf.merge(data_cfg, {"batch_size": teacher_cfg.batch_size})


def teacher_key(teacher_cfg: DictConfig, data_cfg: DictConfig) -> str:
    """Stable 16-hex-digit key of everything that determines the trained teacher."""
    payload = {
        "teacher": OmegaConf.to_container(teacher_cfg, resolve=True),
        "data": OmegaConf.to_container(data_cfg, resolve=True),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def load_or_train_teacher(
    teacher_cfg: DictConfig,
    data_cfg: DictConfig,
    cache_dir: str | os.PathLike,
    trainer_kwargs: dict[str, Any],
) -> nn.Module:
    """Return the frozen teacher described by ``teacher_cfg``, training and caching it when missing."""
    data_cfg = teacher_data_config(teacher_cfg, data_cfg)
    key = teacher_key(teacher_cfg, data_cfg)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    entry = cache / key
    with FileLock(str(cache / f"{key}.lock")), _preserved_rng_state():
        # the teacher depends on its own seed only, never on the random state of the job that trains it
        L.seed_everything(teacher_cfg.seed, workers=True, verbose=False)
        datamodule = instantiate_datamodule(data_cfg, seed=teacher_cfg.seed)
        net = build_network(teacher_cfg.model, datamodule)
        weights = entry / "teacher.pt"
        if weights.exists():
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            log.info("Loaded cached teacher %s", entry)
        else:
            log.info("Training teacher %s (cached for later runs)", key)
            meta = _train(net, teacher_cfg, datamodule, trainer_kwargs)
            entry.mkdir(exist_ok=True)
            tmp = entry / "teacher.pt.tmp"
            torch.save(net.state_dict(), tmp)
            (entry / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            os.replace(tmp, weights)
    net.eval()
    net.requires_grad_(False)
    return net


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


def _train(net: nn.Module, teacher_cfg: DictConfig, datamodule: Any, trainer_kwargs: dict[str, Any]) -> dict:
    module = CrossEntropyModule(
        net, datamodule.num_classes, dict(teacher_cfg.optimizer), teacher_cfg.max_epochs
    )
    trainer = L.Trainer(
        **trainer_kwargs,
        # one process, whatever the job runs in: not the SLURM world of a DDP job, no SLURM requeueing
        plugins=[LightningEnvironment()],
        max_epochs=teacher_cfg.max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=datamodule)
    (results,) = trainer.test(module, datamodule=datamodule, verbose=False)
    return {
        "config": OmegaConf.to_container(teacher_cfg, resolve=True),
        "test_metrics": {k: float(v) for k, v in results.items()},
    }
