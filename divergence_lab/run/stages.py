"""Run a method's stages (:mod:`divergence_lab.methods.stages`) inside a run: on the trainer's device and
precision, each output saved once in the run directory and loaded, not recomputed, on resume.

For each stage in order::

    <run dir>/stages/<name>.pt exists  -> load it                      "[stage] <name>: loaded from ..."
    else, rank 0                       -> run it, save it atomically   "[stage] <name>: done in 12.3s ..."
    else (another DDP rank)            -> wait for rank 0's file, load it

The file holds ``{"output": ..., "random_state": ..., "fingerprint": ..., "numerics": ...}``: the random
streams (torch CPU and CUDA, NumPy, Python) as they were when the stage ended, the digest (``sha256``) of
the run's ``fingerprint.json``, and the numerics it was computed under (threads, torch version, device type,
precision: :func:`~divergence_lab.run.teacher_cache.numerics`). A stage loaded by a process under other
numerics (a job requeued on another node) is used, with one warning line naming the difference: the run's
numbers are then valid but not bit-identical to an uninterrupted run's. Loading restores the streams, so
what follows the stages (the student's initialisation, a reinitialised network) draws the same numbers
whether a stage ran or was loaded, and a resumed run equals an uninterrupted one. The stage function runs
under the trainer's precision (``Precision.forward_context``: autocast for ``bf16-mixed`` / ``16-mixed``,
without loss scaling).

A stage that is interrupted keeps its finished epochs: ``context.checkpoint(loop)`` gives its loops a
:class:`PartialStage`, which writes ``<run dir>/stages/<name>.partial/<loop>.pt`` atomically after every
epoch (``{"epoch", "state", "random_state", "fingerprint", "loop"}``); the stage run again continues after
the last saved epoch, with the random streams as they were then. The folder is removed right after the
stage's output is saved (one left by a stop between the two is ignored: the output is loaded; loading
writes nothing), and removed before the stage runs when the run starts over in place (``ckpt_path=null``).

A stage file (final or partial) whose fingerprint digest is not this run's was written for another config:
it is refused with one line (:class:`~divergence_lab.ground.errors.ConfigError`) that suggests
``ckpt_path=fresh``. A file without a digest (written before stage files recorded one) is accepted.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.progress import format_duration, set_position
from divergence_lab.ground.record_format import RUN_FINGERPRINT_FILE
from divergence_lab.methods.stages import Stage, StageContext, StageOutput
from divergence_lab.run.record import torch_save_atomically

STAGES_DIR = "stages"
PARTIAL_SUFFIX = ".partial"  # <name>.partial/: the per-epoch checkpoints of a stage not finished yet
FINGERPRINT_KEY = "fingerprint"  # in a stage file: the sha256 of the run's fingerprint.json
NUMERICS_KEY = "numerics"  # in a stage file: what decided its last bits (threads, torch, device, precision)
DIGEST_SHOWN = 12  # hex digits of a digest shown in a message
WAIT_POLL_S = 1.0  # how often another DDP rank looks for rank 0's stage file
log = logging.getLogger("divergence_lab")


def _file_name(name: str) -> str:
    return name.replace(" ", "_").replace("/", "_")


def stage_file(run_dir: Path, name: str) -> Path:
    """``<run dir>/stages/<name>.pt``: the saved output of stage ``name``."""
    return run_dir / STAGES_DIR / f"{_file_name(name)}.pt"


def partial_folder(run_dir: Path, name: str) -> Path:
    """``<run dir>/stages/<name>.partial``: the per-epoch checkpoints of stage ``name`` while it runs."""
    return run_dir / STAGES_DIR / f"{_file_name(name)}{PARTIAL_SUFFIX}"


def run_fingerprint_digest(run_dir: Path) -> str | None:
    """The ``sha256`` of ``<run dir>/fingerprint.json``; None when the folder has none (a bare run folder)."""
    try:
        digest = json.loads((run_dir / RUN_FINGERPRINT_FILE).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


def check_stage_file_belongs(path: Path, saved: dict[str, Any], digest: str | None) -> None:
    """Refuse, in one line, a stage file written for another config (its fingerprint digest is not
    ``digest``); a file without a digest, or a run without one, is accepted."""
    stored = saved.get(FINGERPRINT_KEY)
    if stored is None or digest is None or stored == digest:
        return
    raise ConfigError(
        f"{path} was saved by a run of another config (fingerprint {str(stored)[:DIGEST_SHOWN]}, this run"
        f" {digest[:DIGEST_SHOWN]}); rerun with ckpt_path=fresh to set that folder aside and start over"
    )


class PartialStage:
    """The per-epoch checkpoint of one loop of a running stage, in ``path`` (an
    :class:`~divergence_lab.ground.progress.EpochCheckpoint`).

    ``save(epoch, state)`` writes ``state``, the epoch and the global random streams atomically, with the
    run's fingerprint ``digest``; ``load()`` refuses a file of another config, restores the random streams
    and returns ``(epoch, state)``, or None when nothing was saved yet.
    """

    def __init__(self, path: Path, loop: str, digest: str | None) -> None:
        self.path, self.loop, self.digest = path, loop, digest

    def load(self) -> tuple[int, dict[str, Any]] | None:
        if not self.path.is_file():
            return None
        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        check_stage_file_belongs(self.path, saved, self.digest)
        restore_random_state(saved["random_state"])
        return int(saved["epoch"]), saved["state"]

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        content = {
            "epoch": epoch,
            "state": state,
            "random_state": random_state(),
            FINGERPRINT_KEY: self.digest,
            "loop": self.loop,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch_save_atomically(content, self.path)


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
    numerics: dict[str, Any] | None = None,
) -> dict[str, StageOutput]:
    """Run or load each stage in order (see the module docstring); return the outputs by name.

    ``reuse=False`` (``ckpt_path=null``: start over in place) runs every stage again from its first epoch
    and overwrites its file. A stage file of another config raises :class:`ConfigError`. ``numerics``: what
    this process computes under, recorded with each stage it runs and compared with each stage it loads.
    """
    started_at = time.time()
    digest = run_fingerprint_digest(run_dir)
    given_checkpoints = context.checkpoints
    try:
        for stage in stages:
            path, partial = stage_file(run_dir, stage.name), partial_folder(run_dir, stage.name)
            if (reuse and path.is_file()) or not rank_zero:
                if not rank_zero:
                    _wait_for(path, wait_s, newer_than=None if reuse else started_at)
                saved = torch.load(path, map_location="cpu", weights_only=True)
                check_stage_file_belongs(path, saved, digest)
                restore_random_state(saved["random_state"])
                log.info("[stage] %s: loaded from %s (not run again)", stage.name, path)
                _warn_on_other_numerics(stage.name, saved.get(NUMERICS_KEY), numerics)
            else:
                if not reuse:
                    shutil.rmtree(partial, ignore_errors=True)
                context.checkpoints = _checkpoints_in(partial, digest)
                set_position(f"{stage.name} (starting)")
                started = time.monotonic()
                with precision():
                    output = stage.run(context)
                saved = {
                    "output": output,
                    "random_state": random_state(),
                    FINGERPRINT_KEY: digest,
                    NUMERICS_KEY: numerics,
                }
                _save(path, saved)
                shutil.rmtree(partial, ignore_errors=True)
                log.info(
                    "[stage] %s: done in %s, saved to %s",
                    stage.name,
                    format_duration(time.monotonic() - started),
                    path,
                )
            context.outputs[stage.name] = saved["output"]
    finally:
        context.checkpoints = given_checkpoints
    return context.outputs


def _warn_on_other_numerics(
    name: str, recorded: dict[str, Any] | None, current: dict[str, Any] | None
) -> None:
    """One warning line when stage ``name`` was computed under other numerics than this process's."""
    if not recorded or not current or recorded == current:
        return
    changed = ", ".join(
        f"{k} {recorded.get(k)} -> {current.get(k)}" for k in current if recorded.get(k) != current[k]
    )
    log.warning(
        "[stage] %s: computed under other numerics (%s); the run goes on with it, valid but not "
        "bit-identical to an uninterrupted run",
        name,
        changed,
    )


def _checkpoints_in(folder: Path, digest: str | None) -> Callable[[str], PartialStage]:
    """``loop name -> its PartialStage`` in ``folder``."""
    return lambda loop: PartialStage(folder / f"{_file_name(loop)}.pt", loop, digest)
