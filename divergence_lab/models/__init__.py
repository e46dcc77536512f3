"""Plain ``nn.Module`` networks; built from ``conf/model/*.yaml`` with the data's shape filled in."""

from __future__ import annotations

from typing import Any

from torch import nn

from divergence_lab.config.targets import instantiate_target


def build_network(model_cfg: Any, datamodule: Any) -> nn.Module:
    """Instantiate a ``model`` config (``_target_`` + widths) for the datamodule's input shape and classes.

    A network that refuses its arguments raises its own one-line ``ConfigError`` (``model.<key> ...``).
    """
    shape = list(datamodule.input_shape)
    return instantiate_target(model_cfg, "model", in_shape=shape, num_classes=datamodule.num_classes)
