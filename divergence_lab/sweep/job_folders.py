"""Which folder each job of a grid sweep runs in, so that a sweep folder can grow.

A job runs in ``<sweep folder>/<job number>`` (``hydra.sweep.subdir: ${hydra.job.num}``). Hydra numbers
the jobs by their place in the grid, so a grid with more values (:mod:`divergence_lab.sweep.growth`) would
hand an earlier job's folder to another job. The grid sweeper (``hydra_plugins/divergence_lab_plugins/
grid_sweeper.py``) numbers the jobs here instead:

* a job whose swept values are those of a job folder already in the sweep folder (its
  ``.hydra/overrides.yaml``) gets that folder's number: it finds its finished result, or its checkpoint;
* every other job gets the lowest number that no folder has, in grid order; a numbered folder whose jobs
  cannot be told (no readable overrides) keeps its number, unused.

In a new folder this is Hydra's own numbering. The jobs are then launched in runs of consecutive numbers
(:func:`numbered_batches`), each starting at its first number.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException

Identity = tuple[tuple[str, str], ...]  # (swept key, value) pairs in the order of the swept keys
OVERRIDES_FILE = ".hydra/overrides.yaml"
UNBOUNDED_BATCH = (None, -1)  # hydra.sweeper.max_batch_size values that put every job in one batch


def swept_keys(overrides: Sequence[Override]) -> list[str]:
    """The keys a grid sweeps, from its parsed overrides (a later fixed value of a key wins, as in Hydra)."""
    swept: dict[str, bool] = {}
    for override in overrides:
        swept[override.get_key_element()] = override.is_sweep_override()
    return [key for key, is_swept in swept.items() if is_swept]


def job_identity(job_overrides: Sequence[str], keys: Sequence[str]) -> Identity | None:
    """The job's value of each swept key; None when one is missing or the overrides do not parse."""
    values: dict[str, str] = {}
    try:
        for override in OverridesParser.create().parse_overrides(list(job_overrides)):
            if not override.is_sweep_override():
                values[override.get_key_element()] = override.get_value_element_as_str()
    except HydraException:
        return None
    if any(key not in values for key in keys):
        return None
    return tuple((key, values[key]) for key in keys)


def _folder_identity(folder: Path, keys: Sequence[str]) -> Identity | None:
    try:
        overrides = yaml.safe_load((folder / OVERRIDES_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        return None
    return job_identity(overrides, keys)


def existing_jobs(sweep_dir: Path, keys: Sequence[str]) -> tuple[dict[Identity, int], set[int]]:
    """``({identity: number}, every number taken)`` of the numbered job folders in ``sweep_dir``."""
    if not sweep_dir.is_dir():
        return {}, set()
    numbers = sorted(int(p.name) for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    known: dict[Identity, int] = {}
    for number in numbers:
        identity = _folder_identity(sweep_dir / str(number), keys)
        if identity is not None:
            known.setdefault(identity, number)
    return known, set(numbers)


def job_numbers(sweep_dir: Path, jobs: Sequence[Sequence[str]], keys: Sequence[str]) -> list[int]:
    """The folder number of each job (its overrides, in grid order) of a grid sweeping ``keys``."""
    known, taken = existing_jobs(sweep_dir, keys)
    reused: list[int | None] = []
    for job in jobs:
        number = known.pop(identity, None) if (identity := job_identity(job, keys)) is not None else None
        reused.append(number)
    free = (number for number in itertools.count() if number not in taken)
    return [number if number is not None else next(free) for number in reused]


def numbered_batches(
    jobs: Sequence[Sequence[str]], numbers: Sequence[int], max_batch_size: int | None = None
) -> list[tuple[int, list[list[str]]]]:
    """The jobs in the order of their numbers, in runs of consecutive numbers of at most ``max_batch_size``
    jobs (None or -1: no limit): ``[(first number, [job overrides, ...]), ...]``."""
    batches: list[tuple[int, list[list[str]]]] = []
    for index in sorted(range(len(jobs)), key=lambda i: numbers[i]):
        if batches:
            first, batch = batches[-1]
            follows = first + len(batch) == numbers[index]
            if follows and (max_batch_size in UNBOUNDED_BATCH or len(batch) < max_batch_size):
                batch.append(list(jobs[index]))
                continue
        batches.append((numbers[index], [list(jobs[index])]))
    return batches
