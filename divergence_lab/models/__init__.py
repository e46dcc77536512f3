"""Plain ``nn.Module`` networks; built from ``conf/model/*.yaml`` with the data's shape filled in."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from torch import nn


def build_network(model_cfg: Any, datamodule: Any) -> nn.Module:
    """Instantiate a ``model`` config (``_target_`` + widths) for the datamodule's input shape and classes."""
    return instantiate(model_cfg, in_shape=list(datamodule.input_shape), num_classes=datamodule.num_classes)
