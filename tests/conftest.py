"""Shared fixtures: compose the real config once, shrink it, and run the real pipeline in-process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from divergence_lab.divergences.kernels import CACHE_ENV as KERNEL_CACHE_VARIABLE
from divergence_lab.ground.paths import user_cache

TINY = ["trainer.max_epochs=2", "method.teacher.max_epochs=2"]
USER_CACHE_VARIABLES = ("DLAB_TEACHER_CACHE", "XDG_CACHE_HOME")
KERNEL_CACHE_FOLDER = "kernels"


def pytest_configure(config: pytest.Config) -> None:
    share_cpus_between_workers()


def share_cpus_between_workers() -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto``), give worker ``gw<i>`` of ``n`` its own share of
    this process's CPUs, ``cpus[i::n]``, and as many torch threads: the runs a worker starts (in-process
    or ``dlab`` subprocesses, which inherit the affinity; ``threads: auto`` counts it) then never compete
    with another worker's for a core. With fewer CPUs than workers, nothing is shared out."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < count:
        return
    share = set(cpus[int(worker.removeprefix("gw")) :: count])
    os.sched_setaffinity(0, share)
    torch.set_num_threads(len(share))


@pytest.fixture(scope="session", autouse=True)
def private_user_caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point the per-user caches (the teacher cache, anything under XDG_CACHE_HOME) at temporary folders
    for the whole session, unless the caller set them: tests never read or fill the user's real cache.

    The compiled row kernels are the exception: a build depends only on its source, torch and the compiler
    flags (its folder is named by their digest), never on a test, so the session keeps the user's kernel
    cache (``make install`` built it there) instead of compiling them again in every pytest run."""
    with pytest.MonkeyPatch.context() as patch:
        if KERNEL_CACHE_VARIABLE not in os.environ:
            patch.setenv(KERNEL_CACHE_VARIABLE, user_cache(KERNEL_CACHE_FOLDER))
        for name in USER_CACHE_VARIABLES:
            if name not in os.environ:
                patch.setenv(name, str(tmp_path_factory.mktemp(name.lower())))
        yield


def compose_config(overrides: list[str] | None = None, with_hydra: bool = False) -> DictConfig:
    """The composed ``train`` config with ``overrides`` (and its ``hydra`` node when ``with_hydra``)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("divergence_lab.conf", version_base="1.3"):
        return compose("train", overrides=overrides or [], return_hydra_config=with_hydra)


def run_training(tmp_path: Path, overrides: list[str], run_name: str = "run") -> tuple[dict, Path]:
    """Run the real pipeline in this process; return (metrics.json content, run directory).

    The teacher cache is ``tmp_path/teachers``, beside the runs: tests count the teachers a run trained.
    """
    import json

    from divergence_lab.run.pipeline import train

    run_dir = tmp_path / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = [f"paths.output_root={tmp_path}", f"paths.teacher_cache={tmp_path / 'teachers'}"]
    cfg = compose_config([*paths, *overrides], with_hydra=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.mode = RunMode.RUN
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]
    train(cfg)
    return json.loads((run_dir / "metrics.json").read_text()), run_dir


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)
