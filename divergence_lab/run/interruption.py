"""SIGINT and SIGTERM end a run cleanly: one line, ``status.json`` = interrupted, exit 130 / 143.

While a run is inside :func:`handled_signals`, either signal raises :class:`RunInterrupted` where the run is
(a teacher epoch, the CTS search, the fit loop, testing). It derives from ``BaseException`` so no
``except Exception`` on the way swallows it; Lightning passes such exceptions on after tearing down. The
pipeline then records the interruption and exits with ``128 + signal number``, the shell's convention.
Further signals during that shutdown are ignored.

SIGTERM is left alone when another component already owns it: inside a submitit job (SLURM), submitit's
handler stays in place, so SLURM's USR2 requeue path works exactly as before.
"""

from __future__ import annotations

import shlex
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

SIGNAL_EXIT_BASE = 128


class RunInterrupted(BaseException):
    """A run stopped by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return SIGNAL_EXIT_BASE + self.signum


def _owned_by_someone_else(signum: int) -> bool:
    return signal.getsignal(signum) not in (signal.SIG_DFL, signal.default_int_handler, None)


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
