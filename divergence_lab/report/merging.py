"""Whether several sweeps may be reported as one: the settings they held fixed must agree.

A sweep's fixed settings and swept keys are read from its ``sweep_fingerprint.json``, written when it
started (:mod:`divergence_lab.run.fingerprint`). A sweep without one is read from its jobs'
``fingerprint.json``: the settings every job shares are its fixed settings, those that differ between its
jobs its swept ones. Settings under a key that any of the sweeps sweeps are not compared (a sweep of
``divergence=kl,rkl`` merges with one of ``divergence=js``, as it merges with one of other seeds); any other
difference refuses the merge in one line that names the differing keys (:class:`ReportError`).

The files are read as JSON: the report does not import the run layer's fingerprint module.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from divergence_lab.ground.record_format import RUN_FINGERPRINT_FILE, SWEEP_FINGERPRINT_FILE, SWEEP_KEY_PREFIX
from divergence_lab.report.errors import ReportError, error_reason

SHOWN_DIFFERENCES = 3
UNSET = "(unset)"
_MISSING = object()


@dataclass
class SweepSettings:
    """What a sweep held fixed (flattened settings) and what it swept (override or setting keys)."""

    sweep_dir: Path
    fixed: dict[str, Any]
    swept: set[str]


def _settings(path: Path) -> dict[str, Any]:
    """The ``settings`` of a fingerprint file; :class:`ReportError` when it cannot be read."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReportError(f"cannot read {path}: {error_reason(error)}") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise ReportError(f"cannot read {path}: expected a JSON object with a 'settings' object")
    return record["settings"]


def _shared(jobs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], set[str]]:
    """(the settings every job has with one value, the keys whose values differ or some job lacks)."""
    keys = set().union(*jobs)
    fixed = {k: jobs[0][k] for k in keys if all(k in job and job[k] == jobs[0][k] for job in jobs)}
    return fixed, keys - set(fixed)


def read_sweep_settings(sweep_dir: Path) -> SweepSettings:
    """The sweep's fixed settings and swept keys, from its sweep fingerprint, else its jobs' fingerprints."""
    path = sweep_dir / SWEEP_FINGERPRINT_FILE
    if path.is_file():
        settings = _settings(path)
        fixed = {k: v for k, v in settings.items() if not k.startswith(SWEEP_KEY_PREFIX)}
        swept = {k[len(SWEEP_KEY_PREFIX) :].lstrip("+~") for k in settings if k.startswith(SWEEP_KEY_PREFIX)}
        return SweepSettings(sweep_dir, fixed, swept)
    jobs = [_settings(p) for p in sorted(sweep_dir.glob(f"*/{RUN_FINGERPRINT_FILE}"))]
    if not jobs:
        raise ReportError(
            f"cannot merge {sweep_dir}: it records no fixed settings "
            f"(no {SWEEP_FINGERPRINT_FILE}, no {RUN_FINGERPRINT_FILE} in its jobs)"
        )
    fixed, varying = _shared(jobs)
    return SweepSettings(sweep_dir, fixed, varying)


def under(key: str, swept: Iterable[str]) -> bool:
    """Whether setting ``key`` is decided by a swept key (``divergence`` decides ``divergence.name``)."""
    return any(key == s or key.startswith(s + ".") or s.startswith(key + ".") for s in swept)


def _describe(settings: Mapping[str, Any], key: str) -> str:
    return json.dumps(settings[key], default=str) if key in settings else UNSET


def check_mergeable(sweeps: Sequence[SweepSettings]) -> set[str]:
    """Refuse (:class:`ReportError`) sweeps whose fixed settings differ outside the keys any of them
    sweeps; return those swept keys."""
    swept = set().union(*(sweep.swept for sweep in sweeps))
    first = sweeps[0]
    for other in sweeps[1:]:
        keys = sorted(set(first.fixed) | set(other.fixed))
        changed = [
            f"{key}: {_describe(first.fixed, key)} -> {_describe(other.fixed, key)}"
            for key in keys
            if not under(key, swept) and first.fixed.get(key, _MISSING) != other.fixed.get(key, _MISSING)
        ]
        if changed:
            shown = "; ".join(changed[:SHOWN_DIFFERENCES])
            more = f" and {len(changed) - SHOWN_DIFFERENCES} more" if len(changed) > SHOWN_DIFFERENCES else ""
            raise ReportError(
                f"cannot merge {first.sweep_dir} and {other.sweep_dir}: their fixed settings differ "
                f"({shown}{more}); merge sweeps that differ only in the keys they sweep"
            )
    return swept
