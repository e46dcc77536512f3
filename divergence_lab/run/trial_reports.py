"""A trial's job reports each epoch to its Optuna trial, and stops when the trial is pruned.

After each validation epoch ``e`` (counted from 1) the job of seed index ``j`` records its value of
``optimized_metric`` on the trial (a system attribute of its own, ``dlab:seed j:epoch e``: jobs running
side by side never write the same attribute, and the storage serialises the writes). The job that finds
all ``k`` seeds' values of epoch ``e`` recorded writes their mean as the trial's intermediate value at step
``e`` (all such jobs write the same mean: it is computed from the same ``k`` values). Then it asks the
study's pruner (:mod:`divergence_lab.run.optuna_pruners`); when the trial is pruned, or another seed's
job of the trial has stopped it, the job records where it stopped (``dlab:seed j:stopped at epoch``) and
stops training at the end of the epoch (``trainer.should_stop``): it still tests its selected checkpoint
and writes ``metrics.json``, with ``"pruned": {"at_epoch": e}`` (:func:`pruned_entry`). The sweeper then
tells the study the trial was pruned.

A job learns its trial from :class:`~divergence_lab.run.trial_channel.TrialChannel`; outside a trial no
callback is added and nothing is imported from Optuna.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.callbacks import Callback

from divergence_lab.ground.record_format import PRUNED_KEY
from divergence_lab.run.optuna_pruners import build_pruner
from divergence_lab.run.trial_channel import TrialChannel, epoch_attr, stop_attr, stopped_by_pruning

log = logging.getLogger(__name__)


def open_trial(channel: TrialChannel, pruner: Any = None) -> tuple[Any, int]:
    """The study of ``channel`` (with ``pruner``, Optuna's default when None) and its trial's storage id;
    ``KeyError`` when the study has no such trial or no such study exists."""
    import optuna

    study = optuna.load_study(study_name=channel.study_name, storage=channel.storage, pruner=pruner)
    return study, study._storage.get_trial_id_from_study_id_trial_number(study._study_id, channel.number)


class TrialReporter:
    """Reports one job's epochs to its trial (see the module's docstring); Optuna's storage is opened once."""

    def __init__(self, channel: TrialChannel, sweeper: Mapping[str, Any]) -> None:
        self.channel = channel
        self.study, self.trial_id = open_trial(channel, build_pruner(sweeper))
        self.storage = self.study._storage

    def epoch_end(self, epoch: int, value: float) -> bool:
        """Record this seed's ``value`` after ``epoch``, the trial's mean at ``epoch`` once every seed has
        one, and ask the pruner; True when this job must stop (its trial is pruned)."""
        seed_index = self.channel.seed_index
        self.storage.set_trial_system_attr(self.trial_id, epoch_attr(seed_index, epoch), float(value))
        trial = self.storage.get_trial(self.trial_id)
        values = [trial.system_attrs.get(epoch_attr(j, epoch)) for j in range(self.channel.seeds)]
        if None not in values and epoch not in trial.intermediate_values:
            self.storage.set_trial_intermediate_value(self.trial_id, epoch, statistics.fmean(values))
            trial = self.storage.get_trial(self.trial_id)
        if not stopped_by_pruning(trial.system_attrs) and not self.study.pruner.prune(self.study, trial):
            return False
        self.storage.set_trial_system_attr(self.trial_id, stop_attr(seed_index), epoch)
        return True


def pruned_entry(channel: TrialChannel | None = None) -> dict[str, Any]:
    """``{"pruned": {"at_epoch": e}}`` for the ``metrics.json`` of a job its trial's pruning stopped (the
    job of this process when ``channel`` is None), else empty."""
    channel = channel if channel is not None else TrialChannel.from_env()
    if channel is None:
        return {}
    import optuna

    try:
        study, trial_id = open_trial(channel)
        at_epoch = study._storage.get_trial_system_attrs(trial_id).get(stop_attr(channel.seed_index))
    except (optuna.exceptions.OptunaError, KeyError) as error:  # no such study or trial
        log.warning("Optuna trial %d not read (%s): no pruned entry recorded", channel.number, error)
        return {}
    return {} if at_epoch is None else {PRUNED_KEY: {"at_epoch": int(at_epoch)}}


class TrialReports(Callback):
    """The Lightning callback of a trial's job: reports ``metric`` after each validation epoch (rank 0) and
    stops training on every rank when the trial is pruned."""

    def __init__(self, metric: str, reporter: TrialReporter | None) -> None:
        self.metric = metric
        self.reporter = reporter  # None on ranks other than 0

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch + 1
        stop = False
        value = trainer.callback_metrics.get(self.metric)
        if self.reporter is not None and value is not None:
            stop = self._report(epoch, float(value))
        if stop and self.reporter is not None:
            number = self.reporter.channel.number
            log.info("Optuna trial %d pruned: training stops after epoch %d", number, epoch)
        if trainer.strategy.broadcast(stop, 0):
            trainer.should_stop = True

    def _report(self, epoch: int, value: float) -> bool:
        """Report the epoch; a storage that cannot be reached costs this epoch's report (one warning), not the
        run: the next epoch is reported again."""
        import optuna

        assert self.reporter is not None
        try:
            return self.reporter.epoch_end(epoch, value)
        except optuna.exceptions.OptunaError as error:
            log.warning(
                "Optuna trial %d: epoch %d not reported (%s)", self.reporter.channel.number, epoch, error
            )
            return False


def trial_reports(metric: str, rank_zero: bool) -> TrialReports | None:
    """The callback of a job that belongs to an Optuna trial (None outside a trial); the pruner's settings
    are the sweeper's, from the job's Hydra config. A study that cannot be reached costs the reports (one
    warning), never the run."""
    channel = TrialChannel.from_env()
    if channel is None:
        return None
    import optuna
    from hydra.core.hydra_config import HydraConfig

    reporter = None
    if rank_zero:
        try:
            reporter = TrialReporter(channel, HydraConfig.get().sweeper)
        except (optuna.exceptions.OptunaError, KeyError) as error:  # KeyError: no such study
            log.warning(
                "Optuna trial %d not reachable (%s): this job reports no epochs", channel.number, error
            )
    return TrialReports(metric, reporter)
