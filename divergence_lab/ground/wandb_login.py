"""Whether this machine is logged in to W&B, read locally (W&B itself checks the credentials when used).

Logged in = ``WANDB_API_KEY`` is set, or ``~/.netrc`` has an entry for ``api.wandb.ai`` (what
``wandb login`` writes). Runs log online when logged in and offline otherwise; the report's W&B options
are refused in one line without a login, before anything is written.
"""

from __future__ import annotations

import netrc
import os

WANDB_HOST = "api.wandb.ai"  # the netrc entry `wandb login` writes
NOT_LOGGED_IN = "not logged in to W&B (run `wandb login` or set WANDB_API_KEY)"


def wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False
