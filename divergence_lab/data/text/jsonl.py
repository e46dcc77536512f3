"""Read prompt/completion examples from the JSON-lines files ``train``, ``validation`` and ``test.jsonl``.

Each non-blank line is an object ``{"prompt": str, "completion": str}``, optionally with ``"answers": [str,
...]`` (the prompt's correct answers, for generation metrics; by default the completion's). A malformed
line is refused in one line naming ``file:line``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path

from divergence_lab.data.text.rows import TextRow, row_from_record
from divergence_lab.ground.errors import ConfigError

FILE_NAMES = {"train": "train.jsonl", "val": "validation.jsonl", "test": "test.jsonl"}
MAPPING_KEYS = {"train": "train", "val": "validation", "test": "test"}


def resolve(path: str | Path) -> Path:
    """An absolute path; a relative one is resolved against the directory ``dlab`` was started from."""
    return Path(to_absolute_path(str(Path(path).expanduser())))


def jsonl_files(path: Any) -> dict[str, Path]:
    """The files of the three splits: ``path`` is a folder holding :data:`FILE_NAMES`, or a mapping with
    keys ``train``, ``validation`` and ``test``, each a file. Missing files are refused in one line."""
    if path is None:
        raise ConfigError("data.path: set the folder holding train.jsonl, validation.jsonl and test.jsonl")
    if isinstance(path, Mapping):
        missing_keys = [key for key in MAPPING_KEYS.values() if key not in path]
        if missing_keys:
            raise ConfigError(
                "data.path: a mapping of files needs the keys train, validation and test "
                f"(missing {', '.join(missing_keys)})"
            )
        files = {split: resolve(path[key]) for split, key in MAPPING_KEYS.items()}
    else:
        folder = resolve(path)
        if not folder.is_dir():
            raise ConfigError(
                f"data.path: no folder at {folder} (expected train.jsonl, validation.jsonl and test.jsonl)"
            )
        files = {split: folder / name for split, name in FILE_NAMES.items()}
    missing = [str(file) for file in files.values() if not file.is_file()]
    if missing:
        raise ConfigError(f"data.path: missing {', '.join(missing)}")
    return files


def read_jsonl(file: Path) -> list[TextRow]:
    """Every example of one JSON-lines file, in file order; blank lines are skipped."""
    rows = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"data.path: {file} cannot be read as UTF-8 text: {type(error).__name__}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ConfigError(f"data.path: {where}: not valid JSON ({error})") from None
        rows.append(row_from_record(record, where))
    if not rows:
        raise ConfigError(f"data.path: {file} holds no examples")
    return rows


def read_jsonl_splits(files: Mapping[str, Path]) -> dict[str, list[TextRow]]:
    """``{"train": rows, "val": rows, "test": rows}`` from the files of :func:`jsonl_files`."""
    return {split: read_jsonl(file) for split, file in files.items()}


def file_stats(files: Mapping[str, Path]) -> dict[str, list[Any]]:
    """Each split's file name, size and modification time: what the data fingerprint hashes."""
    stats = {split: file.stat() for split, file in files.items()}
    return {split: [files[split].name, stat.st_size, stat.st_mtime_ns] for split, stat in stats.items()}
