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

The **data's content** is part of both: one ``data.content:<path as configured>`` entry per file or folder
the data module reads, the SHA-256 of its bytes (:mod:`divergence_lab.data.content`), so a folder made from
a file that has been edited since is refused, naming the file, like a folder of another config. A content
entry that only one side has is *unknown*, never a difference: a folder written before content entries
existed (or whose data moved, or was made from ``config.yaml`` alone) is accepted, and records the content
when it runs again (a finished one is left as it is); a file missing now is refused by the data module.

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

from divergence_lab.data.content import content_settings, is_content_key
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.record_format import (
    IGNORED_KEYS,
    settings_of,
    stored_run_settings,
)
from divergence_lab.run.record import write_json_atomically

SUPERSEDED_DIR = "superseded"
SHOWN_DIFFERENCES = 3
SHOWN_DIGEST_CHARS = 8  # of a content digest, in a refusal


def fingerprint_settings(
    cfg: DictConfig, ignored: tuple[str, ...] = IGNORED_KEYS, content: bool = True
) -> dict[str, Any]:
    """The result-relevant settings of a run config, flattened and resolved (``hydra`` node excluded); with
    ``content``, one ``data.content:<path>`` entry per file the ``data`` config reads (the SHA-256 of its
    bytes now, :func:`~divergence_lab.data.content.content_settings`)."""
    run_keys = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    container = OmegaConf.to_container(run_keys, resolve=True)
    settings = settings_of(container, ignored)
    if content and isinstance(container, dict):
        settings.update(content_settings(container.get("data")))
    return settings


def digest(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _describe(value: Any) -> str:
    return "(unset)" if value is _MISSING else json.dumps(value, default=str)


_MISSING = object()


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs, in key order; data content entries are
    compared by :func:`content_changes` instead."""
    keys = sorted(k for k in set(old) | set(new) if not is_content_key(k))
    return [
        f"{key}: {_describe(old.get(key, _MISSING))} -> {_describe(new.get(key, _MISSING))}"
        for key in keys
        if old.get(key, _MISSING) != new.get(key, _MISSING)
    ]


def _short(digest: Any) -> str:
    return f"{str(digest)[:SHOWN_DIGEST_CHARS]}…"


def content_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``<file> changed since (sha256 1a2b3c4d… -> 5e6f7a8b…)`` for every data content entry both sides
    have with other digests, in key order; an entry only one side has is unknown, not a change."""
    keys = sorted(k for k in set(old) & set(new) if is_content_key(k) and old[k] != new[k])
    return [
        f"{key.split(':', 1)[1]} changed since (sha256 {_short(old[key])} -> {_short(new[key])})"
        for key in keys
    ]


def write_fingerprint(path: Path, settings: Mapping[str, Any], **extra: Any) -> None:
    """Write ``{"sha256": ..., "settings": ..., **extra}`` atomically, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, {"sha256": digest(settings), "settings": dict(settings), **extra})


def other_config_error(
    kind: str, folder: Path, changed: list[str], dir_key: str, rule: str = ""
) -> ConfigError:
    """The one-line refusal of a ``kind`` (run, sweep) folder that holds another config: the first
    differences (``key: old -> new``), the ``rule`` the folder follows if any, and the ways out."""
    return ConfigError(
        f"{folder} holds a {kind} of another config ({_first(changed)}); {rule + '; ' if rule else ''}"
        f"{_ways_out(folder, dir_key)}"
    )


def other_data_error(folder: Path, changed: list[str], dir_key: str) -> ConfigError:
    """The one-line refusal of a run or sweep folder made from data that has changed since: the files
    (``<file> changed since (sha256 old… -> new…)``, from :func:`content_changes`) and the ways out."""
    return ConfigError(
        f"{folder} was made from other data: {_first(changed)}; "
        f"restore {'it' if len(changed) == 1 else 'them'}, {_ways_out(folder, dir_key)}"
    )


def _first(changed: list[str]) -> str:
    """The first :data:`SHOWN_DIFFERENCES` of ``changed``, and how many more there are."""
    more = f" and {len(changed) - SHOWN_DIFFERENCES} more" if len(changed) > SHOWN_DIFFERENCES else ""
    return "; ".join(changed[:SHOWN_DIFFERENCES]) + more


def _ways_out(folder: Path, dir_key: str) -> str:
    return (
        f"choose another {dir_key}=..., "
        f"or add ckpt_path=fresh to move its contents to {folder.parent / SUPERSEDED_DIR}/"
    )


def check_run_dir(run_dir: Path, settings: Mapping[str, Any]) -> None:
    """Refuse to run ``settings`` in a folder made by another config, or from data whose content has
    changed since (nothing is written)."""
    stored = stored_run_settings(run_dir)
    if stored is None:
        return
    if changed := differences(stored, settings):
        raise other_config_error("run", run_dir, changed, "hydra.run.dir")
    if edited := content_changes(stored, settings):
        raise other_data_error(run_dir, edited, "hydra.run.dir")


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
