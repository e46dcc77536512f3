"""One owner per folder: a ``dlab`` process owns a run folder (or a sweep folder) while it writes there.

The owner holds an advisory lock, ``fcntl.flock`` on ``<folder>/.dlab.lock``, from before it writes
anything until it exits. A second process that wants the folder is refused at once (no waiting) with one
line::

    dlab: error: <folder> is in use by dlab pid 1234 on host h (started 2026-01-01T10:00:00+0000);
    wait for it, or stop it with kill 1234

and exit code 2, having written nothing. Who takes which lock:

* a run: the process that runs the job, in the pipeline before ``status.json`` is written;
* a sweep: its parent process owns the sweep folder for the whole sweep (from the end of the pre-flight),
  and each job's process owns the job's folder (a sub-folder with its own lock), so the sweep's own
  workers are never blocked by it. The lock file descriptor is not inherited by started programs
  (close-on-exec); a process forked without a new program (a data-loader worker) shares the lock until
  it ends;
* the other processes of multi-process training (rank > 0) work in rank 0's folder and take no lock.

``dlab`` also checks a folder named on its command line before its pre-flight, which may move a folder
aside (``ckpt_path=fresh``), without taking the lock (:func:`check_free`); two processes started within
the same moment are told apart when the owner takes the lock.

The lock file holds a JSON record: ``host``, ``pid``, ``started_at`` and ``heartbeat_at``, the last
refreshed every :data:`HEARTBEAT_INTERVAL_S` seconds by a daemon thread. The owner removes the file when it
lets go (a folder a run finished in holds no lock file). A file left behind names a process that ended
without letting go (killed with SIGKILL, a node that died); :mod:`divergence_lab.report.job_status` reads it
to tell such a *stale* job from a running one.

Stale locks: the kernel drops a flock lock when its process dies, so on a local disk a lock file whose
lock can be taken belongs to nobody, and its leftover record is taken over with one line (``dlab: taking
over <folder>: ...``). The record guards the cases the lock cannot see: a record of another host whose
heartbeat is younger than :data:`STALE_AFTER_S` means that host's process still runs (its lock may be
invisible here, see below), and the folder is refused; an older heartbeat is taken over.

Shared folders (NFS): a Linux NFS client emulates ``flock`` with POSIX byte-range locks that the server's
lock manager (NLM for NFSv3, the protocol itself for NFSv4) grants, so two hosts exclude each other as long
as the mount does locking. A client that dies keeps its lock until the server notices: NFSv4 lets the
client's lease expire (about 90 s by default), NLM waits for the client to reboot and tell the server's
status monitor. Mounts with ``nolock`` or ``local_lock=flock``/``all`` keep locks local to each client:
there only the heartbeat record protects the folder, and two processes starting within the same instant
on two hosts can both take it. While the server still holds a dead client's lock, the lock file's record
tells when its heartbeat stopped; after :data:`STALE_AFTER_S` such a folder is taken over without the
kernel lock (said in the take-over line).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import errno
import fcntl
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.lock_record import (
    HEARTBEAT_INTERVAL_S,
    LOCK_FILE,
    RECORD_READ_TRIES,
    TIME_FORMAT,
    LockRecord,
    read_lock_record,
)

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")  # a process with any of them non-zero is no owner


class FolderInUse(ConfigError):
    """Another live ``dlab`` process owns the folder; the message is the one-line refusal."""


class FolderOwnership:
    """This process's ownership of one folder: the open, locked lock file and its heartbeat thread."""

    def __init__(self, folder: Path, fd: int, record: LockRecord, kernel_lock: bool) -> None:
        self.folder, self.fd, self.record, self.kernel_lock = folder, fd, record, kernel_lock
        self.holders = 1
        self._stop = threading.Event()
        self._write(record)
        self._thread = threading.Thread(target=self._beat, name=f"dlab-heartbeat {folder}", daemon=True)
        self._thread.start()

    def _write(self, record: LockRecord) -> None:
        os.pwrite(self.fd, record.to_bytes(), 0)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_INTERVAL_S):
            try:
                self._write(dataclasses.replace(self.record, heartbeat_at=time.time()))
            except OSError:
                return  # the folder went away; nothing left to own

    def release(self) -> None:
        """Stop the heartbeat, remove the lock file (while still holding it), then let go of the lock."""
        self._stop.set()
        try:
            if _same_file(self.fd, self.folder / LOCK_FILE):
                (self.folder / LOCK_FILE).unlink()
        except OSError:
            pass
        with contextlib.suppress(OSError):
            os.close(self.fd)  # closing drops the flock lock


_owned: dict[Path, FolderOwnership] = {}
_owned_lock = threading.Lock()


def _same_file(fd: int, path: Path) -> bool:
    try:
        held, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def is_owner_process() -> bool:
    """Whether this process takes folder locks: not a secondary process of multi-process training (rank > 0;
    Lightning starts local ranks with ``LOCAL_RANK`` before it sets ``RANK``), which works in rank 0's
    folder."""
    return all(int(os.environ.get(name, "0") or 0) == 0 for name in RANK_VARIABLES)


def refusal(folder: Path, owner: LockRecord | None) -> str:
    """The one-line message refusing ``folder`` to a second process."""
    if owner is None:
        return f"{folder} is in use by another dlab process; wait for it to end"
    return f"{folder} is in use by {owner.describe()}; wait for it, or stop it with kill {owner.pid}"


def _take_over_line(folder: Path, previous: LockRecord, kernel_lock: bool) -> str:
    if previous.on_this_host():
        why = "which is no longer running"
    else:
        why = f"whose heartbeat stopped {previous.heartbeat_age_s():.0f} s ago"
    held = "" if kernel_lock else " (its file lock is still held: a file server's lease, or a child process)"
    return f"dlab: taking over {folder}: its lock names {previous.describe()}, {why}{held}"


def _open_locked(folder: Path) -> tuple[int, bool]:
    """Open the lock file and take its flock lock without waiting; ``(fd, False)`` when another holds it.

    A file removed by its owner between our open and our lock is opened again, so two processes never hold
    locks on two different files of the same name.
    """
    path = folder / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return fd, False
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                return fd, True  # a file system without locks: the record alone guards the folder
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd, True
        os.close(fd)


def _verdict(folder: Path, locked: bool) -> tuple[LockRecord | None, bool]:
    """``(the lock file's record, whether it is ours)``; raise :class:`FolderInUse` when its owner lives."""
    previous = read_lock_record(folder, tries=1 if locked else RECORD_READ_TRIES)
    mine = previous is not None and previous.on_this_host() and previous.pid == os.getpid()
    if previous is None or mine:
        if not locked:
            raise FolderInUse(refusal(folder, previous))
        return previous, mine
    # a free kernel lock means the owner on this host is gone; another host's owner may hold a lock that
    # this host cannot see: its heartbeat decides
    if (not locked or not previous.on_this_host()) and not previous.is_stale():
        raise FolderInUse(refusal(folder, previous))
    return previous, mine


def check_free(folder: Path) -> None:
    """Raise :class:`FolderInUse` when another live process owns ``folder``; create and change nothing.

    ``dlab`` asks this before its pre-flight, which may move a folder aside; the owner takes the lock later
    (:func:`acquire`), so two processes started within the same moment are told apart there.
    """
    folder = Path(folder).resolve()
    if folder in _owned:
        return
    try:
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return  # no lock file: nobody owns the folder
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return
            locked = False
        _verdict(folder, locked)
    finally:
        os.close(fd)  # and with it the probing lock


def acquire(folder: Path) -> FolderOwnership:
    """Own ``folder`` (created if missing) for this process, or raise :class:`FolderInUse` at once.

    Owning a folder this process already owns only counts one more holder. A leftover record of an owner
    that is gone is taken over with one line on stderr.
    """
    folder = Path(folder).resolve()
    with _owned_lock:
        if folder in _owned:
            _owned[folder].holders += 1
            return _owned[folder]
        folder.mkdir(parents=True, exist_ok=True)
        fd, locked = _open_locked(folder)
        try:
            previous, mine = _verdict(folder, locked)
        except FolderInUse:
            os.close(fd)
            raise
        if previous is not None and not mine:
            print(_take_over_line(folder, previous, locked), file=sys.stderr, flush=True)
        os.ftruncate(fd, 0)
        mine_now = LockRecord.of_this_process(time.strftime(TIME_FORMAT))
        ownership = FolderOwnership(folder, fd, mine_now, locked)
        _owned[folder] = ownership
        return ownership


def release(folder: Path) -> None:
    """Give up one hold on ``folder``; the last one removes the lock file and drops the lock."""
    folder = Path(folder).resolve()
    with _owned_lock:
        ownership = _owned.get(folder)
        if ownership is None:
            return
        ownership.holders -= 1
        if ownership.holders > 0:
            return
        del _owned[folder]
    ownership.release()


def owns(folder: Path) -> bool:
    """Whether this process owns ``folder``."""
    return Path(folder).resolve() in _owned


class owned_folder:  # noqa: N801  a context manager, named as one reads it: ``with owned_folder(run_dir):``
    """``with owned_folder(folder):`` owns the folder inside the block (see :func:`acquire`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def __enter__(self) -> FolderOwnership:
        return acquire(self.folder)

    def __exit__(self, *exc: Any) -> None:
        release(self.folder)


def release_all() -> None:
    """Let go of every folder this process owns (at exit; the kernel would drop the locks anyway)."""
    with _owned_lock:
        held = list(_owned.values())
        _owned.clear()
    for ownership in held:
        ownership.release()


atexit.register(release_all)
