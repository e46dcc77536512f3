"""Plain ``nn.Module`` networks; built from ``conf/model/*.yaml`` with the data's shape filled in."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch import nn


def build_network(model_cfg: Any, datamodule: Any) -> nn.Module:
    """Instantiate a ``model`` config (``_target_`` + widths) for the datamodule's input shape and classes.

    A network that refuses its arguments raises its own one-line ``ValueError`` (``model.<key> ...``).
    """
    try:
        shape = list(datamodule.input_shape)
        return instantiate(model_cfg, in_shape=shape, num_classes=datamodule.num_classes)
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):
            raise error.__cause__ from None
        raise
