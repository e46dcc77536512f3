"""``hydra/sweeper=basic`` (Hydra's grid sweeper, the default) whose job folders stay put when a sweep grows.

It sweeps the same grid as Hydra's ``BasicSweeper`` (the cartesian product of the swept keys' values,
``hydra.sweeper.params`` first), but each job's number (and so its folder, ``hydra.sweep.subdir:
${hydra.job.num}``) comes from :mod:`divergence_lab.sweep.job_folders`: a job keeps the folder an earlier
sweep in the same folder gave it, and new jobs get numbers after the existing ones. In a new folder the
numbers are Hydra's own. Registered under Hydra's name ``basic``, replacing Hydra's entry.

A failed job does not stop the sweep: the other jobs run to their end, the end-of-sweep callbacks write the
report (which names the failed jobs), and then ``dlab`` ends with one line naming each failed job and its
error, and exit status :data:`SWEEP_FAILED_EXIT_CODE` (:func:`end_with_failures`, also used by the Optuna
sweeper).
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering them in
# sys.modules, and dataclasses cannot resolve string annotations then.
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf

SWEEP_FAILED_EXIT_CODE = 1  # the sweep ran, and some of its jobs failed
ERROR_PREFIX = "dlab: error: "  # the one line a refused or failed command ends with


def _job_error(result: JobReturn) -> str:
    """A failed job's error in one line (a ConfigError is its message; another exception gets its type)."""
    error = result._return_value  # the public return_value would print and raise it
    text = " ".join(str(error).split())
    if type(error).__name__ == "ConfigError":
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def describe_failures(failed: Sequence[JobReturn], jobs: Sequence[Sequence[str]]) -> str:
    """One line: how many of the sweep's ``jobs`` (each one's overrides) failed, then each failed job's
    number, the overrides that set it apart (those not shared by every job) and its error."""
    common = set.intersection(*(set(job) for job in jobs)) if len(jobs) > 1 else set()
    parts = []
    for result in failed:
        job = list(result.overrides or [])
        number = OmegaConf.select(result.hydra_cfg, "hydra.job.num") if result.hydra_cfg is not None else None
        own = [override for override in job if override not in common] or job
        parts.append(f"job {number} ({' '.join(own)}): {_job_error(result)}")
    others = "; the others finished" if len(failed) < len(jobs) else ""
    return f"{len(failed)} of {len(jobs)} jobs failed{others}: " + "; ".join(parts)


def end_with_failures(hydra_context: HydraContext, config: DictConfig, message: str) -> NoReturn:
    """End a sweep that could not finish every job: run the end-of-sweep callbacks first (they write the
    report of what finished, naming what failed), then print ``message`` as the one error line and exit with
    :data:`SWEEP_FAILED_EXIT_CODE`. Hydra calls the callbacks only after a sweep that returns, and turns an
    exception into a traceback, hence the exit from here."""
    hydra_context.callbacks.on_multirun_end(config=config, config_name=config.hydra.job.get("config_name"))
    sys.stdout.flush()
    print(f"{ERROR_PREFIX}{message}", file=sys.stderr)
    sys.exit(SWEEP_FAILED_EXIT_CODE)


class StableBasicSweeper(BasicSweeper):
    """Hydra's grid sweeper, launching each job under the number of its folder in the sweep folder."""

    def sweep(self, arguments: list[str]) -> list[Sequence[JobReturn]]:
        # imported here: Hydra imports this module in every process
        from divergence_lab.sweep.job_folders import job_numbers, numbered_batches, swept_keys

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        (jobs,) = self.split_arguments(overrides, None)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        numbers = job_numbers(sweep_dir, jobs, swept_keys(overrides))
        batches = numbered_batches(jobs, numbers, self.max_batch_size)
        self.overrides = [batch for _, batch in batches]
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Sequence[JobReturn]] = []
        failed: list[JobReturn] = []
        for first, batch in batches:
            self.batch_index += 1
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=first)
            failed += [result for result in results if result.status == JobStatus.FAILED]
            returns.append(results)
        if failed:  # after every batch: one bad job does not cost the others
            jobs = [list(job) for _, batch in batches for job in batch]
            end_with_failures(self.hydra_context, self.config, describe_failures(failed, jobs))
        return returns


@dataclass
class StableBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.divergence_lab_plugins.grid_sweeper.StableBasicSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="basic", node=StableBasicSweeperConf, provider="divergence_lab"
)
