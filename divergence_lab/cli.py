"""The console scripts: ``dlab`` (the Hydra training application; ``dlab --help`` lists the named studies,
the launchers and the config groups) and ``dlab-report`` (the report of a sweep,
:mod:`divergence_lab.report.command`).

Examples::

    dlab                                   # KD on the embedded digits with forward KL
    dlab divergence=rkl seed=3             # reverse KL, another seed
    dlab -m divergence=kl,rkl,js seed=0,1  # an ad-hoc sweep
    dlab -m study=kd_divergences           # a named study (divergence_lab/conf/study/)

Kept thin and cheap to import: no deep-learning framework is imported until a run starts.
"""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from divergence_lab.config.errors import ConfigError


def _fail(error: ConfigError) -> None:
    print(f"dlab: error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
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
    (:func:`~divergence_lab.config.help_sections.render_help`); Hydra renders it only where that cannot.
    """
    from divergence_lab.config.help_sections import (
        HELP_FLAGS,
        HELP_SECTIONS_VARIABLE,
        help_sections,
        render_help,
    )
    from divergence_lab.config.preflight import preflight

    if HELP_FLAGS.intersection(sys.argv[1:]):
        os.environ[HELP_SECTIONS_VARIABLE] = help_sections(sys.argv[1:])
        text = render_help(sys.argv[1:])
        if text is not None:
            print(text)
            return
    try:
        verdict = preflight(sys.argv[1:])
    except ConfigError as error:
        _fail(error)
    if verdict.notice:
        print(verdict.notice)
    sys.argv += verdict.pinned
    hydra_app()


def report() -> int:
    """Console-script entry of ``dlab-report``."""
    from divergence_lab.report.command import main as report_main

    return report_main()


if __name__ == "__main__":
    main()
