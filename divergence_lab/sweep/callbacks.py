"""Hydra callbacks around a sweep: how to resume it, its report when it ends, and how to upload its offline
W&B runs.

Registered in ``conf/train.yaml`` under ``hydra.callbacks``; imported by every ``dlab`` process, so it
imports nothing heavy.
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from divergence_lab.report.wandb_files import OFFLINE_RUN_DIRS
from divergence_lab.run.interruption import rerun_command

log = logging.getLogger(__name__)


def offline_wandb_runs(sweep_dir: Path) -> list[Path]:
    """The offline W&B run folders that the jobs of a sweep left behind."""
    return sorted(sweep_dir.glob(f"*/{OFFLINE_RUN_DIRS}"))


class SweepNotices(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # finished jobs are skipped when the same sweep is rerun into its folder
        command = rerun_command(sys.argv[1:], "hydra.sweep.dir", config.hydra.sweep.dir)
        log.info("If this sweep stops, resume it with: %s", command)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from divergence_lab.report.command import report_at_sweep_end

        log.info(report_at_sweep_end(Path(config.hydra.sweep.dir)))
        runs = offline_wandb_runs(Path(config.hydra.sweep.dir))
        if runs:
            log.info(
                "%d offline W&B run(s). Upload them with: wandb sync %s",
                len(runs),
                shlex.quote(str(Path(config.hydra.sweep.dir))) + f"/*/{OFFLINE_RUN_DIRS}",
            )
