"""Run a method's stages (:mod:`divergence_lab.methods.stages`) inside a run: on the trainer's device and
precision, each output saved once in the run directory and loaded, not recomputed, on resume.

For each stage in order::

    <run dir>/stages/<name>.pt exists  -> load it                      "[stage] <name>: loaded from ..."
    else, rank 0                       -> run it, save it atomically   "[stage] <name>: done in 12.3s ..."
    else (another DDP rank)            -> wait for rank 0's file, load it

The file holds ``{"output": ..., "random_state": ...}``: the random streams (torch CPU and CUDA, NumPy,
Python) as they were when the stage ended. Loading restores them, so what follows the stages (the
student's initialisation, a reinitialised network) draws the same numbers whether a stage ran or was
loaded, and a resumed run equals an uninterrupted one. The stage function runs under the trainer's
precision (``Precision.forward_context``: autocast for ``bf16-mixed`` / ``16-mixed``, without loss scaling).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from divergence_lab.methods.progress import format_duration, set_position
from divergence_lab.methods.stages import Stage, StageContext, StageOutput
from divergence_lab.run.record import torch_save_atomically

STAGES_DIR = "stages"
WAIT_POLL_S = 1.0  # how often another DDP rank looks for rank 0's stage file
log = logging.getLogger("divergence_lab")


def stage_file(run_dir: Path, name: str) -> Path:
    return run_dir / STAGES_DIR / f"{name.replace(' ', '_')}.pt"


def random_state() -> dict[str, Any]:
    """The global random streams in a form ``torch.load(weights_only=True)`` reads back."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gauss],
        "python": [version, list(python_state), python_gauss],
    }


def restore_random_state(state: dict[str, Any]) -> None:
    """Set the global random streams to ``state`` (from :func:`random_state`)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached_gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    version, python_state, python_gauss = state["python"]
    random.setstate((version, tuple(python_state), python_gauss))


def _save(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(exist_ok=True)
    torch_save_atomically(content, path)


def _written(path: Path, newer_than: float | None) -> bool:
    return path.is_file() and (newer_than is None or path.stat().st_mtime >= newer_than)


def _wait_for(path: Path, timeout_s: float, newer_than: float | None) -> None:
    """Wait until ``path`` exists (and was written after ``newer_than``, a time.time(), when given)."""
    deadline = time.monotonic() + timeout_s
    while not _written(path, newer_than):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not write {path} within {timeout_s:.0f} s (stage_wait_s)")
        time.sleep(WAIT_POLL_S)


def run_stages(
    stages: Sequence[Stage],
    context: StageContext,
    run_dir: Path,
    precision: Callable[[], AbstractContextManager[Any]],
    rank_zero: bool,
    wait_s: float,
    reuse: bool = True,
) -> dict[str, StageOutput]:
    """Run or load each stage in order (see the module docstring); return the outputs by name.

    ``reuse=False`` (``ckpt_path=null``: start over in place) runs every stage again and overwrites its file.
    """
    started_at = time.time()
    for stage in stages:
        path = stage_file(run_dir, stage.name)
        if (reuse and path.is_file()) or not rank_zero:
            if not rank_zero:
                _wait_for(path, wait_s, newer_than=None if reuse else started_at)
            saved = torch.load(path, map_location="cpu", weights_only=True)
            restore_random_state(saved["random_state"])
            log.info("[stage] %s: loaded from %s (not run again)", stage.name, path)
        else:
            set_position(f"{stage.name} (starting)")
            started = time.monotonic()
            with precision():
                output = stage.run(context)
            saved = {"output": output, "random_state": random_state()}
            _save(path, saved)
            log.info(
                "[stage] %s: done in %s, saved to %s",
                stage.name,
                format_duration(time.monotonic() - started),
                path,
            )
        context.outputs[stage.name] = saved["output"]
    return context.outputs
