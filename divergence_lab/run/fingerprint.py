"""One folder holds one config: the fingerprint of a run (and of a sweep) and the checks that use it.

The **run fingerprint** is the SHA-256 of the resolved config without the keys that cannot change a result
(:data:`IGNORED_KEYS`: where files go, how the run is logged, how it resumes, what the report shows, how many
threads it uses, what a method declares about itself for the checks). It is written to ``fingerprint.json``
in the run directory beside the flattened config it was computed from, so a refusal can name the keys that
differ. Folders written before fingerprints existed
are read through their ``config.yaml``.

The **sweep fingerprint** (``sweep_fingerprint.json`` in the sweep folder) is the fingerprint of the
sweep's fixed settings together with its grid or search space (one entry per swept key, ``sweep:<key>``).
A sweep started in a folder that holds another sweep is refused before any job starts; a grid that only
adds values to the swept keys of the folder's sweep grows it instead (:mod:`divergence_lab.sweep.growth`).

``ckpt_path=fresh`` never deletes anything: the folder's old contents move to
``<parent>/superseded/<name>-<time>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from divergence_lab.config.errors import ConfigError
from divergence_lab.run.record import RUN_FINGERPRINT_FILE, write_json_atomically

SUPERSEDED_DIR = "superseded"
SHOWN_DIFFERENCES = 3
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


def fingerprint_settings(cfg: DictConfig, ignored: tuple[str, ...] = IGNORED_KEYS) -> dict[str, Any]:
    """The result-relevant settings of a run config, flattened and resolved (``hydra`` node excluded)."""
    run_keys = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    container = OmegaConf.to_container(run_keys, resolve=True)
    return {k: v for k, v in flatten(container).items() if not _ignored(k, ignored)}


def digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _describe(value: Any) -> str:
    return "(unset)" if value is _MISSING else json.dumps(value, default=str)


_MISSING = object()


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs, in key order."""
    keys = sorted(set(old) | set(new))
    return [
        f"{key}: {_describe(old.get(key, _MISSING))} -> {_describe(new.get(key, _MISSING))}"
        for key in keys
        if old.get(key, _MISSING) != new.get(key, _MISSING)
    ]


def write_fingerprint(path: Path, settings: Mapping[str, Any], **extra: Any) -> None:
    """Write ``{"sha256": ..., "settings": ..., **extra}`` atomically, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, {"sha256": digest(settings), "settings": dict(settings), **extra})


def read_fingerprint_record(path: Path) -> dict[str, Any] | None:
    """The whole fingerprint file (``sha256``, ``settings``, any extra); None when missing or unreadable."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("settings"), dict) else None


def read_fingerprint(path: Path) -> dict[str, Any] | None:
    """The settings recorded in a fingerprint file; None when it is missing or unreadable."""
    record = read_fingerprint_record(path)
    return None if record is None else dict(record["settings"])


def stored_run_settings(run_dir: Path) -> dict[str, Any] | None:
    """The settings a run folder was made with: its fingerprint file, else its ``config.yaml``, else None."""
    record = run_dir / RUN_FINGERPRINT_FILE
    if record.is_file():
        return read_fingerprint(record)
    config = run_dir / "config.yaml"
    if config.is_file():
        return fingerprint_settings(OmegaConf.load(config))
    return None


def other_config_error(
    kind: str, folder: Path, changed: list[str], dir_key: str, rule: str = ""
) -> ConfigError:
    """The one-line refusal of a ``kind`` (run, sweep) folder that holds another config: the first
    differences (``key: old -> new``), the ``rule`` the folder follows if any, and the ways out."""
    shown = "; ".join(changed[:SHOWN_DIFFERENCES])
    more = f" and {len(changed) - SHOWN_DIFFERENCES} more" if len(changed) > SHOWN_DIFFERENCES else ""
    return ConfigError(
        f"{folder} holds a {kind} of another config ({shown}{more}); {rule + '; ' if rule else ''}"
        f"choose another {dir_key}=..., "
        f"or add ckpt_path=fresh to move its contents to {folder.parent / SUPERSEDED_DIR}/"
    )


def check_run_dir(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to run ``settings`` in a folder made by another config (nothing is written)."""
    stored = stored_run_settings(run_dir)
    if stored is not None and (changed := differences(stored, settings)):
        raise other_config_error("run", run_dir, changed, "hydra.run.dir")


def move_aside(folder: Path) -> Path | None:
    """Move a non-empty ``folder`` to ``<parent>/superseded/<name>-<time>``; return where it went."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    target = folder.parent / SUPERSEDED_DIR / f"{folder.name}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name}.{suffix}")
    os.replace(folder, target)
    return target
