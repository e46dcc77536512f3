"""Data modules: the embedded ``digits`` default and seeded ``synthetic`` Gaussian mixtures."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf


def instantiate_datamodule(data_cfg: DictConfig, seed: int) -> Any:
    """Build and set up the datamodule of a ``data`` config (its ``name`` key is a label, not an argument)."""
    arguments = OmegaConf.masked_copy(data_cfg, [key for key in data_cfg if key != "name"])
    datamodule = instantiate(arguments, seed=seed)
    datamodule.setup()
    return datamodule
