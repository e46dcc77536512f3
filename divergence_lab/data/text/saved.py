"""Read prompt/completion examples from a ``datasets.DatasetDict`` written with ``save_to_disk``.

The dict holds the splits ``train``, ``validation`` and ``test``, each with the string columns ``prompt``
and ``completion`` and optionally ``answers`` (a list of strings per example). ``datasets`` is an optional
dependency, imported only here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from divergence_lab.data.text.rows import TextRow, row_from_record
from divergence_lab.ground.errors import ConfigError

SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
REQUIRED_COLUMNS = ("prompt", "completion")


def read_saved_splits(folder: Path) -> dict[str, list[TextRow]]:
    """``{"train": rows, "val": rows, "test": rows}`` from the saved dataset in ``folder``."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "data.path: install datasets to read a dataset saved with save_to_disk (pip install datasets)"
        ) from None
    if not folder.is_dir():
        raise ConfigError(f"data.path: no folder at {folder} (expected a dataset written by save_to_disk)")
    try:
        saved = datasets.load_from_disk(str(folder))
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"data.path: {folder} holds no dataset saved with save_to_disk: {reason}") from None
    if not isinstance(saved, datasets.DatasetDict):
        raise ConfigError(
            f"data.path: {folder} holds one split; save a DatasetDict with train, validation and test"
        )
    missing = [name for name in SPLIT_NAMES.values() if name not in saved]
    if missing:
        raise ConfigError(
            f"data.path: {folder} lacks the split(s) {', '.join(missing)} (it has {', '.join(saved)})"
        )
    return {split: split_rows(saved[name], name) for split, name in SPLIT_NAMES.items()}


def split_rows(split: Any, name: str) -> list[TextRow]:
    """The rows of one saved split, each checked as a JSON-lines record would be."""
    absent = [column for column in REQUIRED_COLUMNS if column not in split.column_names]
    if absent:
        raise ConfigError(
            f"data.path: the {name} split has no column {' or '.join(absent)} "
            f"(it has {', '.join(split.column_names)})"
        )
    if len(split) == 0:
        raise ConfigError(f"data.path: the {name} split holds no examples")
    columns = [column for column in (*REQUIRED_COLUMNS, "answers") if column in split.column_names]
    records = zip(*(split[column] for column in columns), strict=True)
    return [
        row_from_record(dict(zip(columns, values, strict=True)), f"{name}[{index}]")
        for index, values in enumerate(records)
    ]


def folder_stats(folder: Path) -> list[list[Any]]:
    """Every file under ``folder``: relative name, size and modification time (for the data fingerprint)."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return [[str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns] for path in files]
