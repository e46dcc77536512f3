"""The best of several candidates, ties included: one rule for the sweeper's ``best.yaml`` and the report.

Candidates whose value is within ``tolerance`` (absolute) of the best value are tied with it; with
``tolerance = 0`` only exact equality ties. The tied candidates are returned in their given order (the
lowest-numbered trial first); a single choice takes the first of those at the best value itself.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import TypeVar

Key = TypeVar("Key", bound=Hashable)


def tied_best(values: Mapping[Key, float], maximize: bool, tolerance: float = 0.0) -> list[Key]:
    """The keys of ``values`` whose value is within ``tolerance`` of the best (the largest when
    ``maximize``, else the smallest), in the mapping's order; NaN values never count; empty when no value
    is a number."""
    finite = {key: value for key, value in values.items() if not math.isnan(value)}
    if not finite:
        return []
    best = max(finite.values()) if maximize else min(finite.values())
    return [key for key, value in finite.items() if value == best or abs(value - best) <= tolerance]
