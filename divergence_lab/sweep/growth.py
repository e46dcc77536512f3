"""A sweep folder holds one sweep, and that sweep may grow.

The folder's ``sweep_fingerprint.json`` (:mod:`divergence_lab.run.fingerprint`) records the sweep's fixed
settings and one ``sweep:<key>`` entry per swept key. A grid sweep started again in that folder is

* the same sweep (a rerun: finished jobs are skipped, unfinished ones resume) when the fixed settings and
  the values of every swept key are the same (``seed=0,1`` and ``seed='range(0,2)'`` are the same values);
* a **growth** when the fixed settings and the swept keys are the same and each swept key's values include
  the folder's: ``seed=0,1`` grown to ``seed=0,1,2,3,4``, ``divergence=kl,rkl`` to ``kl,rkl,js``. Only the
  new jobs train: every earlier job keeps its folder (:mod:`divergence_lab.sweep.job_folders`) and returns
  its finished result. The fingerprint then records the grown grid, and its ``growth`` list when the grid
  grew, by which values and to how many jobs;
* refused otherwise, in one line naming the keys that differ, before anything is written.

A search (Optuna) does not grow this way: its space must stay as it is (its length is ``n_trials``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from divergence_lab.run.fingerprint import (
    differences,
    other_config_error,
    read_fingerprint_record,
    write_fingerprint,
)
from divergence_lab.run.record import SWEEP_FINGERPRINT_FILE, SWEEP_KEY_PREFIX

GROWTH_KEY = "growth"  # the sweep fingerprint's list of growths
GROWTH_RULE = "a sweep folder takes its own sweep again, or more values of the same swept keys"


@dataclass
class Growth:
    """How a grid grew: the values new to each swept key, and its number of jobs before and after."""

    added: dict[str, list[str]]
    jobs_before: int | None
    jobs_after: int | None

    def entry(self) -> dict[str, Any]:
        """The record of this growth in the sweep fingerprint's ``growth`` list."""
        return {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "added": self.added, "jobs": self.jobs_after}

    def describe(self, folder: Path) -> str:
        """One line: what the sweep in ``folder`` grows by, and that finished jobs are not run again."""
        added = "; ".join(f"{key} + {', '.join(values)}" for key, values in self.added.items())
        size = f"; {self.jobs_before} -> {self.jobs_after} jobs" if self.jobs_after is not None else ""
        return f"growing the sweep in {folder} ({added}{size}); jobs that finished earlier are not run again"


def spec_values(key: str, spec: Any) -> list[str] | None:
    """The values of ``key=spec`` as the grid sweeper enumerates them (``0,1``, ``range(0,5)``,
    ``choice(a,b)``); None for what it cannot enumerate (an ``interval``, a ``glob``, a bad spec)."""
    try:
        override = OverridesParser.create().parse_override(f"{key}={spec}")
        if not override.is_sweep_override():
            return [override.get_value_element_as_str()]
        if not override.is_discrete_sweep():
            return None
        return list(override.sweep_string_iterator())
    except (HydraException, TypeError, ValueError):
        return None


def _split(settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fixed settings, ``{swept key: its spec}``) of a sweep fingerprint's settings."""
    fixed = {k: v for k, v in settings.items() if not k.startswith(SWEEP_KEY_PREFIX)}
    swept = {k[len(SWEEP_KEY_PREFIX) :]: v for k, v in settings.items() if k.startswith(SWEEP_KEY_PREFIX)}
    return fixed, swept


def _grid_size(swept: Mapping[str, Any]) -> int | None:
    """The number of jobs of a grid (None when a swept key's values cannot be enumerated)."""
    sizes = [
        len(values) if (values := spec_values(key, spec)) is not None else None for key, spec in swept.items()
    ]
    return None if None in sizes else math.prod(size for size in sizes if size is not None)


def sweep_change(
    stored: Mapping[str, Any], settings: Mapping[str, Any], growable: bool = True
) -> tuple[Growth | None, list[str]]:
    """Compare a sweep's settings with those its folder holds: ``(None, [])`` for the same sweep,
    ``(growth, [])`` for a growth (only with ``growable``, a grid sweeper), else ``(None, differences)``
    with one ``key: old -> new`` line per differing key (fixed settings first)."""
    old_fixed, old_swept = _split(stored)
    new_fixed, new_swept = _split(settings)
    problems = differences(old_fixed, new_fixed)
    added: dict[str, list[str]] = {}
    for key in sorted(set(old_swept) | set(new_swept)):
        entry = SWEEP_KEY_PREFIX + key
        old = {entry: old_swept[key]} if key in old_swept else {}
        new = {entry: new_swept[key]} if key in new_swept else {}
        if not (line := differences(old, new)):
            continue
        old_values = spec_values(key, old[entry]) if old else None
        new_values = spec_values(key, new[entry]) if new else None
        if old_values is None or new_values is None:  # a swept key added or dropped, or a search space
            problems += line
        elif dropped := [v for v in old_values if v not in new_values]:
            problems += [f"{line[0]} (without {', '.join(dropped)})"]
        elif new_values_only := [v for v in new_values if v not in old_values]:
            if growable:
                added[key] = new_values_only
            else:
                problems += line
    if problems:
        return None, problems
    if not added:
        return None, []
    return Growth(added, _grid_size(old_swept), _grid_size(new_swept)), []


def record_sweep(folder: Path, settings: Mapping[str, Any], growable: bool = True) -> Growth | None:
    """Check the sweep ``settings`` against the sweep ``folder`` holds and write its fingerprint; return
    the growth, if the sweep grows. A sweep of another config raises a one-line ConfigError first."""
    path = folder / SWEEP_FINGERPRINT_FILE
    record = read_fingerprint_record(path)
    history: Sequence[Any] = []
    growth = None
    if record is not None:
        growth, problems = sweep_change(record["settings"], settings, growable)
        if problems:
            rule = GROWTH_RULE if growable else ""
            raise other_config_error("sweep", folder, problems, "hydra.sweep.dir", rule)
        earlier = record.get(GROWTH_KEY)
        history = [*(earlier if isinstance(earlier, list) else []), *([growth.entry()] if growth else [])]
    write_fingerprint(path, settings, **({GROWTH_KEY: list(history)} if history else {}))
    return growth
