"""The console scripts: ``dlab`` (the Hydra training application; ``dlab --help`` lists the named studies,
the launchers and the config groups) and ``dlab-report`` (the report of a sweep,
:mod:`divergence_lab.report.command`).

Examples::

    dlab                                   # KD on the embedded digits with forward KL
    dlab divergence=rkl seed=3             # reverse KL, another seed
    dlab -m divergence=kl,rkl,js seed=0,1  # an ad-hoc sweep
    dlab -m study=kd_divergences           # a named study (sweeps/ = divergence_lab/conf/study/)

One process owns a folder (:mod:`divergence_lab.run.ownership`): a second ``dlab`` on a run or sweep
folder in use is refused in one line (exit 2). A sweep's parent owns its folder for the whole sweep, and
SIGINT / SIGTERM stop the sweep with all its jobs' processes, print the command that continues it, and exit
with ``128 + signal number`` (:func:`~divergence_lab.run.interruption.sweep_signals`).

Kept thin and cheap to import: no deep-learning framework is imported until a run starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from divergence_lab.ground.errors import ConfigError

MULTIRUN_FLAGS = ("-m", "--multirun")
RUN_DIR_KEY, SWEEP_DIR_KEY = "hydra.run.dir", "hydra.sweep.dir"


def _fail(error: ConfigError) -> None:
    print(f"dlab: error: {error}", file=sys.stderr)
    sys.exit(2)


def named_folder(argv: Sequence[str]) -> tuple[bool, Path | None]:
    """``(is a sweep, the run or sweep folder the command line names)``; the folder is None when it is
    not named, or named through an interpolation that only Hydra resolves."""
    multirun = any(arg in MULTIRUN_FLAGS for arg in argv)
    key = SWEEP_DIR_KEY if multirun else RUN_DIR_KEY
    named = [arg.split("=", 1)[1] for arg in argv if arg.split("=", 1)[0].lstrip("+") == key and "=" in arg]
    if not named or "${" in named[-1]:
        return multirun, None
    return multirun, Path(named[-1].strip("'\""))


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def hydra_app(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from divergence_lab.run.pipeline import train

    try:
        return train(cfg)
    except ConfigError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # one failed job of a sweep: the launcher records it, the sweeper decides what follows
        _fail(error)
        raise  # unreachable; keeps type checkers content


def main() -> None:
    """Console-script entry: check the command line, its values and its folder, then hand over to Hydra.

    ``--help`` is rendered here from the help template of ``train.yaml``
    (:func:`~divergence_lab.entry.help_sections.render_help`); Hydra renders it only where that cannot.
    """
    from divergence_lab.entry.help_sections import (
        HELP_FLAGS,
        HELP_SECTIONS_VARIABLE,
        help_sections,
        render_help,
    )
    from divergence_lab.entry.preflight import preflight

    if HELP_FLAGS.intersection(sys.argv[1:]):
        os.environ[HELP_SECTIONS_VARIABLE] = help_sections(sys.argv[1:])
        text = render_help(sys.argv[1:])
        if text is not None:
            print(text)
            return
    from divergence_lab.run.ownership import acquire, check_free, is_owner_process

    owner = is_owner_process()  # a secondary DDP rank works in the folder its rank 0 owns
    try:
        _, folder = named_folder(sys.argv[1:])
        if owner and folder is not None:  # before the pre-flight, which may move the folder aside
            check_free(folder)
        verdict = preflight(sys.argv[1:])
        sys.argv += verdict.pinned
        multirun, folder = named_folder(sys.argv[1:])
        if owner and multirun and folder is not None:  # the sweep's parent owns its folder to the end
            acquire(folder)
    except ConfigError as error:
        _fail(error)
    if verdict.notice:
        print(verdict.notice)
    if multirun:
        _sweep(folder)
    else:
        hydra_app()


def _sweep(folder: Path | None) -> None:
    """Run the sweep; a signal stops it with its jobs' processes, one line and exit 128 + signal."""
    from divergence_lab.run.interruption import RunInterrupted, rerun_command, sweep_signals

    try:
        with sweep_signals():
            hydra_app()
    except RunInterrupted as stop:
        where = folder if folder is not None else "its folder"
        rerun = rerun_command(sys.argv[1:], SWEEP_DIR_KEY, str(folder)) if folder is not None else ""
        print(f"dlab: sweep stopped by {stop} ({where}); rerun: {rerun}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)


def report() -> int:
    """Console-script entry of ``dlab-report``."""
    from divergence_lab.report.command import main as report_main

    return report_main()


if __name__ == "__main__":
    main()
