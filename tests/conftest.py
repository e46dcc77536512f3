"""Shared fixtures: compose the real config once, shrink it, and run the real pipeline in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

TINY = ["trainer.max_epochs=2", "method.teacher.max_epochs=2"]


def compose_config(overrides: list[str] | None = None, with_hydra: bool = False) -> DictConfig:
    """The composed ``train`` config with ``overrides`` (and its ``hydra`` node when ``with_hydra``)."""
    GlobalHydra.instance().clear()
    with initialize_config_module("divergence_lab.conf", version_base="1.3"):
        return compose("train", overrides=overrides or [], return_hydra_config=with_hydra)


def run_training(tmp_path: Path, overrides: list[str], run_name: str = "run") -> tuple[dict, Path]:
    """Run the real pipeline in this process; return (metrics.json content, run directory)."""
    import json

    from divergence_lab.pipeline import train

    run_dir = tmp_path / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_config([f"paths.output_root={tmp_path}", *overrides], with_hydra=True)
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
