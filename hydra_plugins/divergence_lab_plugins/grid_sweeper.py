"""``hydra/sweeper=basic`` (Hydra's grid sweeper, the default) whose job folders stay put when a sweep grows.

It sweeps the same grid as Hydra's ``BasicSweeper`` (the cartesian product of the swept keys' values,
``hydra.sweeper.params`` first), but each job's number (and so its folder, ``hydra.sweep.subdir:
${hydra.job.num}``) comes from :mod:`divergence_lab.sweep.job_folders`: a job keeps the folder an earlier
sweep in the same folder gave it, and new jobs get numbers after the existing ones. In a new folder the
numbers are Hydra's own. Registered under Hydra's name ``basic``, replacing Hydra's entry.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering them in
# sys.modules, and dataclasses cannot resolve string annotations then.
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf


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
        for first, batch in batches:
            self.batch_index += 1
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=first)
            for result in results:
                _ = result.return_value  # raises when the job failed, as Hydra's sweeper does
            returns.append(results)
        return returns


@dataclass
class StableBasicSweeperConf(BasicSweeperConf):
    _target_: str = "hydra_plugins.divergence_lab_plugins.grid_sweeper.StableBasicSweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="basic", node=StableBasicSweeperConf, provider="divergence_lab"
)
