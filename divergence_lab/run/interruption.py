"""SIGINT and SIGTERM end a run cleanly: one line, ``status.json`` = interrupted, exit 130 / 143.

While a run is inside :func:`handled_signals`, either signal raises :class:`RunInterrupted` where the run is
(a teacher epoch, the CTS search, the fit loop, testing). It derives from ``BaseException`` so no
``except Exception`` on the way swallows it; Lightning passes such exceptions on after tearing down. The
pipeline then records the interruption and exits with ``128 + signal number``, the shell's convention.
Further signals during that shutdown are ignored.

SIGTERM is left alone when another component already owns it: inside a submitit job on SLURM, submitit's
handler stays in place, so SLURM's USR2 requeue path works exactly as before. A local submitit job
(``hydra/launcher=submitit_local``, ``SUBMITIT_EXECUTOR=local``) has no requeue: it takes SIGTERM.

A local sweep stops the same way (:func:`sweep_signals`, installed by the sweep's parent process): SIGINT or
SIGTERM to the parent is forwarded as SIGTERM to every process the parent started (joblib's loky workers,
submitit's local job controllers and their jobs); each job records itself interrupted and its process
exits. The parent waits up to :data:`WORKER_GRACE_S` for them, kills what is left with SIGKILL (loky
keeps idle workers for reuse: they end here too), starts no further job, prints one line with the command
that continues the sweep, and exits with ``128 + signal number``. A job of a sweep that runs in a process
of its own (:func:`in_sweep_worker`) ends that process after recording the interruption, so the worker
pool cannot hand it a queued job. Finding the started processes reads ``/proc`` (Linux); elsewhere only
the sequential launcher stops cleanly.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

SIGNAL_EXIT_BASE = 128
WORKER_GRACE_S = 15.0  # how long a stopping sweep waits for its jobs to record their interruption
WORKER_POLL_S = 0.1  # how often it looks whether they ended
SWEEP_PARENT_VARIABLE = "DLAB_SWEEP_PARENT_PID"  # set by a sweep's parent: its jobs' processes inherit it
TRACKER_MARK = b"resource_tracker"  # in the command line of multiprocessing's and loky's resource trackers
LOCAL_SUBMITIT = ("SUBMITIT_EXECUTOR", "local")  # a local submitit job: SIGTERM is the user's stop


class RunInterrupted(BaseException):
    """A run stopped by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_BASE + self.signum


def _owned_by_someone_else(signum: int) -> bool:
    if signum == signal.SIGTERM and os.environ.get(LOCAL_SUBMITIT[0]) == LOCAL_SUBMITIT[1]:
        return False
    handler = signal.getsignal(signum)
    if getattr(handler, "stops_sweep", False):
        return False  # a sequential sweep's own handler: its in-process job takes the signal first
    return handler not in (signal.SIG_DFL, signal.default_int_handler, None)


@contextmanager
def handled_signals() -> Iterator[None]:
    """Turn SIGINT / SIGTERM into :class:`RunInterrupted` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = [False]

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if raised[0]:
            return  # already shutting down
        raised[0] = True
        raise RunInterrupted(signum)

    handled = [signal.SIGINT]
    if not _owned_by_someone_else(signal.SIGTERM):
        handled.append(signal.SIGTERM)
    previous = {signum: signal.signal(signum, interrupt) for signum in handled}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def rerun_command(argv: Sequence[str], folder_key: str, folder: str) -> str:
    """The ``dlab`` command that continues this run or sweep in its own folder."""
    kept = [arg for arg in argv if not arg.startswith(f"{folder_key}=")]
    return shlex.join(["dlab", *kept, f"{folder_key}={folder}"])


def in_sweep_worker() -> bool:
    """Whether this process runs a job for a local sweep whose parent is another process on this machine
    (joblib's workers, submitit_local's jobs): the parent named by the inherited variable is an ancestor."""
    parent = os.environ.get(SWEEP_PARENT_VARIABLE, "")
    return parent.isdigit() and int(parent) in ancestors(os.getpid())


def ancestors(pid: int) -> list[int]:
    """The processes above ``pid`` (its parent, grandparent ...), read from ``/proc``; empty elsewhere."""
    found: list[int] = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        found.append(pid)
    return found


def end_worker_process(exit_code: int) -> None:
    """End this sweep worker's process now: a pool must not hand it a queued job of a stopping sweep."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children, grandchildren ...), read from ``/proc``; empty elsewhere."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_resource_tracker(pid: int) -> bool:
    """Whether ``pid`` is a resource tracker of multiprocessing or loky: it ignores SIGTERM on purpose,
    cleans up shared memory and semaphores, and ends by itself once the sweep's parent has exited."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return TRACKER_MARK in command


def stop_processes(pids: Sequence[int], grace_s: float = WORKER_GRACE_S) -> None:
    """Send SIGTERM to ``pids`` (resource trackers left to end by themselves, :func:`is_resource_tracker`),
    wait up to ``grace_s`` for them to end, then SIGKILL those left and whatever they started."""
    pids = [pid for pid in pids if not is_resource_tracker(pid)]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(WORKER_POLL_S)
    left = [*pids, *[child for parent in pids for child in descendants(parent)]]
    left = [pid for pid in left if _alive(pid) and not is_resource_tracker(pid)]
    for pid in left:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own children, so they do not linger as zombies
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return False
    return bool(fields) and fields[0] != "Z"


class SweepInterrupted(RunInterrupted):
    """A sweep's parent process stopped by a signal, its jobs' processes stopped too."""


@contextmanager
def sweep_signals(before_exit: Callable[[], None] | None = None) -> Iterator[None]:
    """Inside the block (a sweep's parent, main thread), SIGINT / SIGTERM stop the sweep's processes
    (:func:`stop_processes` on every process below this one) and raise :class:`SweepInterrupted`.

    Jobs run in this very process (the sequential launcher) take the signal themselves first
    (:func:`handled_signals` overrides this handler). ``before_exit`` runs after the processes ended.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    os.environ[SWEEP_PARENT_VARIABLE] = str(os.getpid())
    stopping = [False]

    def stop(signum: int, frame: FrameType | None) -> None:
        if stopping[0]:
            return
        stopping[0] = True
        stop_processes(descendants(os.getpid()))
        if before_exit is not None:
            before_exit()
        raise SweepInterrupted(signum)

    stop.stops_sweep = True  # type: ignore[attr-defined]
    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.environ.pop(SWEEP_PARENT_VARIABLE, None)
