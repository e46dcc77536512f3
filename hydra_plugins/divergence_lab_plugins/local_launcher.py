"""``hydra/launcher=submitit_local`` with a cap on how many jobs run at once.

hydra-submitit-launcher's local launcher starts every job of a sweep at the same time, which swamps a
workstation. This launcher runs the sweep in consecutive batches of ``max_parallel_jobs`` (default 2), and
is registered under the plugin's own name, ``submitit_local``, replacing the plugin's entry:
``dlab -m hydra/launcher=submitit_local hydra.launcher.max_parallel_jobs=4 divergence=kl,rkl,js``.

The jobs' output goes to their logs (``<job>/train.log``, ``.submitit/``), not to the terminal: when a
batch has ended, the launcher repeats each job's ``sweep <name>: k/N jobs ended ...`` line from its log
(:mod:`divergence_lab.sweep.callbacks`). Stopping the sweep (SIGINT / SIGTERM to ``dlab``) stops the job
processes too (:func:`divergence_lab.run.interruption.sweep_signals`): submitit's controller passes
SIGTERM on to its job, which records itself interrupted.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering them in
# sys.modules, and dataclasses cannot resolve string annotations then.
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra_plugins.hydra_submitit_launcher.config  # noqa: F401  the plugin registers its entries first
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

log = logging.getLogger(__name__)
JOB_END_MARK = " jobs ended, "  # in the line each job logs when it ends (divergence_lab.sweep.callbacks)


def job_end_line(result: JobReturn) -> str | None:
    """The ``sweep <name>: k/N jobs ended ...`` line that a finished job wrote to its log, if any."""
    hydra = result.hydra_cfg.hydra if result.hydra_cfg is not None else None
    if hydra is None:
        return None
    log_file = Path(hydra.runtime.output_dir) / f"{hydra.job.name}.log"
    try:
        lines = log_file.read_text().splitlines()
    except OSError:
        return None
    ends = [line for line in lines if line.split(" - ", 1)[-1].startswith("sweep ") and JOB_END_MARK in line]
    return ends[-1].split(" - ", 1)[-1] if ends else None


class CappedLocalLauncher(LocalLauncher):
    """Launch a sweep in consecutive batches of at most ``max_parallel_jobs`` local submitit jobs."""

    def __init__(self, max_parallel_jobs: int = 2, **params: Any) -> None:
        if not isinstance(max_parallel_jobs, int) or max_parallel_jobs < 1:
            raise ValueError(
                f"hydra.launcher.max_parallel_jobs must be an integer >= 1 (got {max_parallel_jobs!r})"
            )
        super().__init__(**params)
        self.max_parallel_jobs = max_parallel_jobs

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns: list[JobReturn] = []
        for start in range(0, len(job_overrides), self.max_parallel_jobs):
            batch = job_overrides[start : start + self.max_parallel_jobs]
            ended = super().launch(batch, initial_job_idx + start)
            for result in ended:
                if (line := job_end_line(result)) is not None:
                    log.info(line)
            returns += ended
        return returns


@dataclass
class CappedLocalQueueConf(LocalQueueConf):
    _target_: str = "hydra_plugins.divergence_lab_plugins.local_launcher.CappedLocalLauncher"
    max_parallel_jobs: int = 2


ConfigStore.instance().store(
    group="hydra/launcher", name="submitit_local", node=CappedLocalQueueConf, provider="divergence_lab"
)
