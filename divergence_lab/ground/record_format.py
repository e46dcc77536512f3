"""The run-record format: the files a run and a sweep leave in their folders, and their readers.

A run folder holds ``config.yaml``, ``fingerprint.json`` (:data:`RUN_FINGERPRINT_FILE`: the result-relevant
settings), ``status.json`` (:data:`STATUS_FILE`), ``metrics.json`` (:data:`METRICS_FILE`, written last: its
presence means the run finished), ``teacher.json``, ``confusion.json`` and ``checkpoints/last.ckpt``; a sweep
folder holds ``sweep_fingerprint.json``. What each file holds is described in :mod:`divergence_lab.run.record`
(the writer). This module reads them and needs no deep-learning framework, so the report imports it alone.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from divergence_lab.ground.lock_record import STALE_AFTER_S, pid_alive, read_lock_record

METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
SELECTED_CHECKPOINT = "best.ckpt"  # the epoch a selection rule picked (run/selection.py); absent: last.ckpt
STATUS_FILE = "status.json"
TEACHER_FILE = "teacher.json"  # the teachers a run distilled from: network and test metrics, by cache key
CONFUSION_FILE = "confusion.json"  # the tested network's confusion matrix (classifiers, few classes)
PER_CLASS_KEY = "per_class_acc"  # metrics.json: the tested network's accuracy per class, by class index
PRUNED_KEY = "pruned"  # metrics.json: {"at_epoch": e} of an Optuna trial's job that its pruning stopped
# the fingerprints (divergence_lab.run.fingerprint), named here for the report, which reads them too
RUN_FINGERPRINT_FILE = "fingerprint.json"  # a run's result-relevant settings
SWEEP_FINGERPRINT_FILE = "sweep_fingerprint.json"  # a sweep's fixed settings and its grid
SWEEP_KEY_PREFIX = "sweep:"  # a swept key's entry in the sweep fingerprint: sweep:<key> = its values


# keys (and whole sub-trees) that never change a run's numbers
IGNORED_KEYS = (
    "paths",
    "logger",
    "ckpt_path",
    "study_name",
    "report",
    "threads",
    "stage_wait_s",
    "checks",
    "data.data_dir",
    "trainer.log_every_n_steps",
    # what a method declares about itself (for the checks and labels), not how it trains
    "method.reads",
    "method.instead",
    "method.val_metrics",
    "method.divergence_kinds",
    "method.uses_divergence",
    "method.model_families",
    "method.data_tasks",
    "method.accepts",
    # where its code lives: moving a module does not change a result
    "method.builder",
    "method.stages",
    # whether confusion.json is written: a record of the test, not how the network trains
    "method.confusion_max_classes",
)


def _ignored(key: str, ignored: tuple[str, ...]) -> bool:
    return any(key == prefix or key.startswith(prefix + ".") for prefix in ignored)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"divergence.temperature": 2.0, ...}``: every leaf of a nested dict under its dotted key."""
    if isinstance(node, Mapping) and node:
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def settings_of(container: Any, ignored: tuple[str, ...] = IGNORED_KEYS) -> dict[str, Any]:
    """The result-relevant settings of a resolved config container, flattened (``ignored`` keys left out)."""
    return {k: v for k, v in flatten(container).items() if not _ignored(k, ignored)}


def read_status(run_dir: Path) -> dict[str, Any]:
    """``finished`` when metrics.json exists, else what status.json says (``starting`` before it exists)."""
    if (run_dir / METRICS_FILE).is_file():
        return {"state": "finished"}
    try:
        return json.loads((run_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {"state": "starting"}


def last_checkpoint_age_s(run_dir: Path) -> float | None:
    """Seconds since the job last wrote ``last.ckpt`` (None when it never did)."""
    path = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
    return time.time() - path.stat().st_mtime if path.is_file() else None


def running_owner_gone(run_dir: Path, status: Mapping[str, Any]) -> str | None:
    """Why the process that a ``running`` status names has ended without saying so, or None while it may
    still run: its lock record's pid is dead on this host or its heartbeat stopped; without a lock record,
    the pid that ``status.json`` records is dead on this host."""
    record = read_lock_record(run_dir)
    if record is not None:
        if record.on_this_host() and not pid_alive(record.pid):
            return f"pid {record.pid} on {record.host} is gone"
        if record.heartbeat_age_s() > STALE_AFTER_S:
            return f"no heartbeat for {record.heartbeat_age_s():.0f} s"
        return None
    pid, host = status.get("pid"), status.get("host")
    if isinstance(pid, int) and host == socket.gethostname() and not pid_alive(pid):
        return f"pid {pid} on {host} is gone"
    return None


def finished_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json when it finished, else None (also when the file is unreadable: rerun).

    The caller has checked that the folder holds this very config (:mod:`divergence_lab.run.fingerprint`).
    """
    try:
        record = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None


def read_fingerprint_record(path: Path) -> dict[str, Any] | None:
    """The whole fingerprint file (``sha256``, ``settings``, any extra); None when missing or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("settings"), dict) else None


def fingerprint_digest(run_dir: Path) -> str | None:
    """The SHA-256 of a run's result-relevant settings as its fingerprint file holds it (None without)."""
    record = read_fingerprint_record(run_dir / RUN_FINGERPRINT_FILE)
    return None if record is None else record.get("sha256")


def read_teachers(path: Path) -> dict[str, dict[str, Any]]:
    """A run's ``teacher.json`` at ``path``: ``{cache key: {"model", "test_metrics", "numerics"}}``; empty
    when it is missing or unreadable."""
    try:
        teachers = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return teachers if isinstance(teachers, dict) else {}


def read_fingerprint(path: Path) -> dict[str, Any] | None:
    """The settings recorded in a fingerprint file; None when it is missing or unreadable."""
    record = read_fingerprint_record(path)
    return None if record is None else dict(record["settings"])


def stored_run_settings(run_dir: Path) -> dict[str, Any] | None:
    """The settings a run folder was made with: its fingerprint file, else its ``config.yaml`` (without
    data content entries: the content the folder was made from is unknown), else None."""
    record = run_dir / RUN_FINGERPRINT_FILE
    if record.is_file():
        return read_fingerprint(record)
    config = run_dir / "config.yaml"
    if config.is_file():
        return settings_of(OmegaConf.to_container(OmegaConf.load(config), resolve=True))
    return None
