"""W&B data out of W&B: read an offline run file back, and list a sweep's runs from the W&B API.

An offline run keeps its config, history and summary only in ``run-<id>.wandb``. The file is a 7-byte
header (``:W&B``, then ``<HB`` = 0xBEE1, version 0) followed by LevelDB-log records: 32 KiB blocks of
chunks, each chunk ``<IHB`` = (CRC-32 of type byte + payload, payload length, type) and a payload; type 1
holds a whole record, types 2/3/4 its first/middle/last pieces; a block with fewer than 7 bytes left is
padded. Each record is a ``wandb_internal_pb2.Record`` protobuf. W&B ships no reader for it, hence this one.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
OFFLINE_RUN_DIRS = "wandb/offline-run-*"  # under a run directory: one folder per attempt of the run


@dataclass
class OfflineRun:
    """What one ``.wandb`` file says about its run. History rows are in logging order; ``args`` is the
    command line W&B recorded for the run and ``git_commit`` the commit it was given; ``step_metrics``: the
    x-axis each metric (or glob, ``val/*``) was defined with; media (images, tables) appear in history rows
    as ``<key>._type``, ``<key>.path`` ... entries."""

    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    args: list[str] = field(default_factory=list)
    git_commit: str = ""
    step_metrics: dict[str, str] = field(default_factory=dict)  # metric (or glob) -> its x-axis metric


def record_payloads(path: Path) -> Iterator[bytes]:
    """The serialized records of a ``.wandb`` file, checksums verified."""
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path} is not a W&B run file (header {data[:7]!r})")
    position, pieces = len(HEADER), bytearray()
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:
            position += left_in_block
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, position)
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            position += left_in_block
            continue
        start = position + CHUNK_HEADER.size
        payload = data[start : start + length]
        if len(payload) < length:
            break  # the run is still writing this record
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != checksum:
            raise ValueError(f"{path}: corrupt chunk at byte {position}")
        position = start + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            pieces = bytearray(payload)
        elif kind == MIDDLE:
            pieces += payload
        elif kind == LAST:
            yield bytes(pieces + payload)
            pieces = bytearray()


def _items(items: Any) -> Iterator[tuple[str, Any]]:
    for item in items:
        yield (item.key or ".".join(item.nested_key)), json.loads(item.value_json)


def read_offline_run(path: Path) -> OfflineRun:
    """Parse ``run-<id>.wandb`` into its run's identity, config, history rows and final summary."""
    from wandb.proto import wandb_internal_pb2

    run = OfflineRun()
    for payload in record_payloads(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            meta = record.run
            run.run_id, run.project, run.group, run.job_type = (
                meta.run_id,
                meta.project,
                meta.run_group,
                meta.job_type,
            )
            run.tags = list(meta.tags)
            run.git_commit = meta.git.commit
            run.config.update(_items(meta.config.update))
        elif kind == "environment" and record.environment.program:
            run.args = list(record.environment.args)
        elif kind == "metric" and record.metric.step_metric:
            run.step_metrics[record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "config":
            run.config.update(_items(record.config.update))
            for item in record.config.remove:
                run.config.pop(item.key or ".".join(item.nested_key), None)
        elif kind == "history":
            run.history.append(dict(_items(record.history.item)))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    run.config.pop("_wandb", None)
    return run


def offline_run_files(run_dir: Path) -> list[Path]:
    """The ``.wandb`` files a run directory holds: one per attempt (a resumed run adds one)."""
    return sorted(Path(run_dir).glob(f"{OFFLINE_RUN_DIRS}/run-*.wandb"))


def fetch_sweep_runs(project_path: str, group: str) -> list[dict[str, Any]]:
    """The runs of one sweep (W&B group) as W&B has them online: name, state, summary. Needs a login."""
    import wandb

    runs = wandb.Api().runs(project_path, filters={"group": group})
    return [{"name": run.name, "state": run.state, "summary": dict(run.summary)} for run in runs]
