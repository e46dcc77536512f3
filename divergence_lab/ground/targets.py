"""Instantiate a ``_target_`` config so that what goes wrong is one line naming the config key."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from divergence_lab.ground.errors import ConfigError

NOT_FOUND = "Error locating target"  # Hydra's message when the ``_target_`` cannot be imported


def instantiate_target(cfg: Any, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(cfg, **kwargs)``; the object's own refusal (a ConfigError) comes through as
    it is, and a ``_target_`` that cannot be imported becomes ``<key>._target_: cannot import ...``."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        if str(error).startswith(NOT_FOUND):
            raise ConfigError(
                f"{key}._target_: cannot import {cfg.get('_target_')!r}; is its package installed "
                "(pip install -e <package>) or its folder on PYTHONPATH?"
            ) from None
        raise
