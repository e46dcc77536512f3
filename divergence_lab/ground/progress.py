"""Progress lines for long work, readable in a terminal, a pipe, a SLURM log and ``train.log`` alike.

Everything goes through the ``divergence_lab`` logger: Hydra's job logging sends it to the console and to
``<run dir>/train.log``. One line per step of a stage (an epoch, a search epoch, an LTR round)::

    [teacher] epoch 3/30  loss 0.412  acc 0.931  elapsed 4.1s  left ~37s

``left`` is the mean time per finished step times the steps still to do. A loop that continues from a
checkpoint of its own (:class:`EpochCheckpoint`) says so first, and then logs only the steps it runs::

    [cts search] resuming cts search at epoch 4/10 (3 done before)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

log = logging.getLogger("divergence_lab")

_position = ["start-up"]  # where this process is: named in the message of an interrupted run


def set_position(where: str) -> None:
    """Record where the run is (``epoch 3/20``, ``teacher epoch 2/30``, ``testing``)."""
    _position[0] = where


def current_position() -> str:
    return _position[0]


def format_duration(seconds: float) -> str:
    """``4.1s``, ``3m07s`` or ``1h02m``: short enough for a progress line."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def format_values(values: Mapping[str, float]) -> str:
    """``loss 0.412  acc 0.931``: each value with 4 significant digits."""
    return "  ".join(f"{name} {value:.4g}" for name, value in values.items())


def mean_of(values: Sequence[Any]) -> float:
    """The mean of per-step values (floats or detached tensors) as a float; NaN when there are none.

    Tensors are summed where they live and converted once, so a stage pays one device sync per line.
    """
    return float(sum(values)) / len(values) if values else math.nan


class StageProgress:
    """Log one line per finished step of a named stage (``[cts search] epoch 2/10 ...``).

    ``unit`` names the step (epoch, round); ``total`` is the number of steps, or None when unknown.
    """

    def __init__(self, stage: str, total: int | None, unit: str = "epoch", start: int = 0) -> None:
        self.stage, self.total, self.unit = stage, total, unit
        self.started = time.monotonic()
        self.first_step = start  # steps done before this process (a resumed run) do not count for timing
        self._locate(start)

    def _locate(self, done: int) -> None:
        prefix = "" if self.stage == "train" else f"{self.stage} "
        if self.total is None or done < self.total:
            total = f"/{self.total}" if self.total else ""
            set_position(f"{prefix}{self.unit} {done + 1}{total}")
        else:
            set_position(f"the end of {prefix or 'training '}({self.unit} {done}/{self.total} done)")

    def resuming(self, done: int) -> str:
        """Log and return the line saying that this loop continues after ``done`` steps finished earlier."""
        total = f"/{self.total}" if self.total else ""
        line = f"[{self.stage}] resuming {self.stage} at {self.unit} {done + 1}{total} ({done} done before)"
        log.info(line)
        return line

    def step(self, done: int, values: Mapping[str, float] | None = None) -> str:
        """Record that ``done`` steps are finished; log and return the progress line."""
        elapsed = time.monotonic() - self.started
        position = f"{self.unit} {done}/{self.total}" if self.total else f"{self.unit} {done}"
        parts = [f"[{self.stage}] {position}"]
        if values:
            parts.append(format_values(values))
        parts.append(f"elapsed {format_duration(elapsed)}")
        timed_steps = done - self.first_step
        if self.total and timed_steps > 0 and done < self.total:
            parts.append(f"left ~{format_duration(elapsed / timed_steps * (self.total - done))}")
        line = "  ".join(parts)
        self._locate(done)
        log.info(line)
        return line


class EpochCheckpoint(Protocol):
    """Where a multi-epoch loop of a stage keeps its progress, so an interrupted stage continues.

    ``save(epoch, state)`` after each finished epoch (``epoch`` = epochs done; ``state``: tensors, numbers,
    strings and lists or dicts of them, on the CPU); ``load()`` returns the last saved ``(epoch, state)``, or
    None when there is none, and sets the global random streams as they were when it was saved. The loop
    calls ``load()`` right before its first epoch (after building what it draws at random), restores its
    networks and optimisers from ``state`` and goes on with epoch ``epoch + 1``: the stage then ends
    exactly as if it had never stopped.
    """

    def load(self) -> tuple[int, dict[str, Any]] | None: ...

    def save(self, epoch: int, state: dict[str, Any]) -> None: ...


class NoCheckpoint:
    """An :class:`EpochCheckpoint` that keeps nothing (a stage run in memory, without a run folder)."""

    def load(self) -> tuple[int, dict[str, Any]] | None:
        return None

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        return None


NO_CHECKPOINT = NoCheckpoint()
