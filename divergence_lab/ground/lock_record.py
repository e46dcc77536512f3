"""The lock file's record: who owns a run or sweep folder (host, pid, start, heartbeat).

The owner (:mod:`divergence_lab.run.ownership`) writes ``<folder>/.dlab.lock`` as one JSON record padded to
:data:`RECORD_BYTES` bytes and refreshes ``heartbeat_at`` every :data:`HEARTBEAT_INTERVAL_S` seconds; readers
(the owner's rivals, the report's job status) only read it. Part of the run-record format.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = ".dlab.lock"
HEARTBEAT_INTERVAL_S = 15.0  # how often the owner refreshes heartbeat_at in its lock record
STALE_AFTER_S = 8 * HEARTBEAT_INTERVAL_S  # a record of another host with an older heartbeat is stale
RECORD_BYTES = 512  # the record is padded to this size and written in one call: readers never see half
RECORD_READ_TRIES = 20  # a record being created may be empty for a moment: read again ...
RECORD_READ_PAUSE_S = 0.02  # ... after this pause
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


@dataclass(frozen=True)
class LockRecord:
    """What the lock file says about its owner."""

    host: str
    pid: int
    started_at: str
    heartbeat_at: float  # seconds since the epoch

    @classmethod
    def of_this_process(cls, started_at: str) -> LockRecord:
        """The record of this process, its heartbeat now."""
        return cls(socket.gethostname(), os.getpid(), started_at, time.time())

    def to_bytes(self) -> bytes:
        """The record as the lock file holds it: JSON padded to :data:`RECORD_BYTES`, then a newline."""
        data = json.dumps(dataclasses.asdict(self)).encode()
        return data.ljust(RECORD_BYTES) + b"\n"

    def heartbeat_age_s(self, now: float | None = None) -> float:
        """Seconds since the owner last refreshed its heartbeat."""
        return (time.time() if now is None else now) - self.heartbeat_at

    def on_this_host(self) -> bool:
        """Whether the owner runs on this machine (its pid can be checked here)."""
        return self.host == socket.gethostname()

    def is_stale(self, now: float | None = None) -> bool:
        """Whether the owner is gone: its pid is dead on this host, or its heartbeat stopped."""
        if self.on_this_host():
            return not pid_alive(self.pid)
        return self.heartbeat_age_s(now) > STALE_AFTER_S

    def describe(self) -> str:
        """``dlab pid 1234 on host h (started ...)``, as messages name the owner."""
        return f"dlab pid {self.pid} on host {self.host} (started {self.started_at})"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def _parse(data: bytes) -> LockRecord | None:
    try:
        raw = json.loads(data.decode().strip() or "null")
        host, pid, started = str(raw["host"]), int(raw["pid"]), str(raw["started_at"])
        return LockRecord(host, pid, started, float(raw["heartbeat_at"]))
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


def read_lock_record(folder: Path, tries: int = 1) -> LockRecord | None:
    """The record of ``folder``'s lock file, or None (no file, or no readable record after ``tries``)."""
    for attempt in range(tries):
        try:
            record = _parse((folder / LOCK_FILE).read_bytes())
        except OSError:
            return None
        if record is not None:
            return record
        if attempt + 1 < tries:
            time.sleep(RECORD_READ_PAUSE_S)
    return None
