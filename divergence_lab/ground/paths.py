"""Where the package keeps per-user files: ``<cache home>/divergence_lab/<subfolder>``.

``<cache home>`` is ``$XDG_CACHE_HOME`` when it is set to an absolute path (the XDG base-directory rule: a
relative one is ignored), else ``~/.cache``. Read from the environment at every call.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_FOLDER = "divergence_lab"


def user_cache_home() -> Path:
    """``$XDG_CACHE_HOME`` if it is an absolute path, else ``~/.cache``."""
    configured = os.environ.get("XDG_CACHE_HOME", "")
    if configured and Path(configured).is_absolute():
        return Path(configured)
    return Path.home() / ".cache"


def user_cache(subfolder: str) -> str:
    """``<user cache home>/divergence_lab/<subfolder>``, read from the environment at every call."""
    return str(user_cache_home() / PACKAGE_FOLDER / subfolder)
