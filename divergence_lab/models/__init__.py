"""Plain ``nn.Module`` networks; built from ``conf/model/*.yaml`` with the data's shape filled in."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.targets import instantiate_target

TEXT_MODELS = "model=bert_tiny, bert_small or bert_local"


def build_network(model_cfg: Any, datamodule: Any) -> nn.Module:
    """Instantiate a ``model`` config (``_target_`` + widths) for the datamodule's input shape and classes.

    A data module with a vocabulary (text) also gives ``vocab_size`` and ``pad_token_id`` through its
    ``network_arguments()``; a network that does not take them is refused in one line. A network that
    refuses its arguments raises its own one-line ``ConfigError`` (``model.<key> ...``).
    """
    shape = list(datamodule.input_shape)
    extra = datamodule.network_arguments() if hasattr(datamodule, "network_arguments") else {}
    if extra:
        _check_takes(model_cfg, extra)
    return instantiate_target(model_cfg, "model", in_shape=shape, num_classes=datamodule.num_classes, **extra)


def _check_takes(model_cfg: Any, arguments: dict[str, Any]) -> None:
    """Refuse a network class that does not take the data's extra ``arguments`` (a vision network on text)."""
    from hydra.utils import get_object

    target = str(model_cfg.get("_target_"))
    try:
        parameters = inspect.signature(get_object(target)).parameters
    except (ImportError, ValueError, TypeError):  # not importable: instantiate_target names it
        return
    if not set(arguments) <= set(parameters):
        raise ConfigError(
            f"model: {target} does not take token rows; text data needs a text model ({TEXT_MODELS})"
        )
