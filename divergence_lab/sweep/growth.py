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
* refused otherwise, in one line naming the keys that differ, before anything is written. A swept key
  given one value (``seed=1`` after ``seed=0,1,2``) is named with that value, ``(not swept)``, and the values
  it leaves out.

The fingerprint also holds the content of the data the sweep reads (``data.content:<file>``, see
:mod:`divergence_lab.run.fingerprint`): a sweep folder whose data has been edited since is refused in one
line naming the file. A sweep over the data's own sources (the ``data`` group, ``data.source``,
``data.path`` ..., :func:`~divergence_lab.data.content.reads_other_sources`) reads other files in each job:
its fingerprint records no content, and each job's folder checks its own.

A search (Optuna) does not grow this way: its space must stay as it is (its length is ``n_trials``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from divergence_lab.data.content import is_content_key, reads_other_sources
from divergence_lab.ground.record_format import (
    SWEEP_FINGERPRINT_FILE,
    SWEEP_KEY_PREFIX,
    read_fingerprint_record,
)
from divergence_lab.run.fingerprint import (
    content_changes,
    differences,
    other_config_error,
    other_data_error,
    write_fingerprint,
)

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


def _unswept(fixed: Mapping[str, Any], key: str) -> str:
    """How a sweep that does not sweep ``key`` sets it: ``<its fixed value> (not swept)``, or ``(unset)``
    when its fixed settings hold no value under that key (a config group's choice, a key it lacks)."""
    plain = key.lstrip("+~")
    return f"{json.dumps(fixed[plain], default=str)} (not swept)" if plain in fixed else "(unset)"


def _swept_on_one_side(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``sweep:<key>: old -> new`` for a key one of the two sweeps sweeps and the other sets to one value
    (with the values that one value leaves out of the grid)."""
    old_fixed, old_swept = _split(old)
    new_fixed, new_swept = _split(new)
    before = json.dumps(old_swept[key]) if key in old_swept else _unswept(old_fixed, key)
    after = json.dumps(new_swept[key]) if key in new_swept else _unswept(new_fixed, key)
    line = f"{SWEEP_KEY_PREFIX}{key}: {before} -> {after}"
    plain = key.lstrip("+~")
    if key in old_swept and plain in new_fixed and (values := spec_values(key, old_swept[key])) is not None:
        left_out = [v for v in values if v != str(new_fixed[plain])]
        line += f" (without {', '.join(left_out)})" if left_out else ""
    return line


def sweep_change(
    stored: Mapping[str, Any], settings: Mapping[str, Any], growable: bool = True
) -> tuple[Growth | None, list[str]]:
    """Compare a sweep's settings with those its folder holds: ``(None, [])`` for the same sweep,
    ``(growth, [])`` for a growth (only with ``growable``, a grid sweeper), else ``(None, differences)``
    with one ``key: old -> new`` line per differing key (fixed settings first; a key swept by one sweep
    only is named once, by its ``sweep:<key>`` line). Data content entries are compared by
    :func:`~divergence_lab.run.fingerprint.content_changes`, not here."""
    old_fixed, old_swept = _split(stored)
    new_fixed, new_swept = _split(settings)
    swept = {key.lstrip("+~") for key in {*old_swept, *new_swept}}
    problems = differences(
        {k: v for k, v in old_fixed.items() if k not in swept},
        {k: v for k, v in new_fixed.items() if k not in swept},
    )
    added: dict[str, list[str]] = {}
    for key in sorted(set(old_swept) | set(new_swept)):
        entry = SWEEP_KEY_PREFIX + key
        if key not in old_swept or key not in new_swept:  # a swept key added or dropped
            problems.append(_swept_on_one_side(key, stored, settings))
            continue
        old = {entry: old_swept[key]}
        new = {entry: new_swept[key]}
        if not (line := differences(old, new)):
            continue
        old_values = spec_values(key, old[entry])
        new_values = spec_values(key, new[entry])
        if old_values is None or new_values is None:  # a search space
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


def sweep_content(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as the sweep fingerprint records them: without data content entries when the sweep
    sweeps the data's sources (each job then reads other files; its own folder records them)."""
    _, swept = _split(settings)
    if not reads_other_sources(swept):
        return dict(settings)
    return {key: value for key, value in settings.items() if not is_content_key(key)}


def record_sweep(folder: Path, settings: Mapping[str, Any], growable: bool = True) -> Growth | None:
    """Check the sweep ``settings`` against the sweep ``folder`` holds and write its fingerprint; return
    the growth, if the sweep grows. A sweep of another config, or made from data that has been edited
    since, raises a one-line ConfigError first."""
    path = folder / SWEEP_FINGERPRINT_FILE
    record = read_fingerprint_record(path)
    settings = sweep_content(settings)
    history: Sequence[Any] = []
    growth = None
    if record is not None:
        growth, problems = sweep_change(record["settings"], settings, growable)
        if problems:
            rule = GROWTH_RULE if growable else ""
            raise other_config_error("sweep", folder, problems, "hydra.sweep.dir", rule)
        if edited := content_changes(record["settings"], settings):
            raise other_data_error(folder, edited, "hydra.sweep.dir")
        earlier = record.get(GROWTH_KEY)
        history = [*(earlier if isinstance(earlier, list) else []), *([growth.entry()] if growth else [])]
    write_fingerprint(path, settings, **({GROWTH_KEY: list(history)} if history else {}))
    return growth
