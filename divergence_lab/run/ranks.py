"""Which process of a multi-process run this is."""

from __future__ import annotations

import os


def is_global_rank_zero() -> bool:
    """True in the process that owns the run directory: rank 0 of multi-process training, else always."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0))) == 0
