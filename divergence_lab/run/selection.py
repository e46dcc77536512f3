"""The tested checkpoint: ``checkpoints/best.ckpt`` chosen by a declared rule, and which epoch it holds.

``optimized_metric`` picks the best epoch; among epochs tied on it, ``checkpoint_selection.tie_break``
decides (:class:`~divergence_lab.metrics.selection.SelectionRule`): ``val/nll`` by default (the lowest
validation NLL among the tied epochs, then the earliest), ``first`` (Lightning's own behaviour), ``last``,
or another validation metric the method logs (the config checks refuse one it does not log, before any
work). Methods that test their last epoch (``method.checkpoint_selection: last``, GCD) select nothing: the
tie-break does not apply to them.

:class:`SelectedCheckpoint` is Lightning's ``ModelCheckpoint`` (one file, ``best.ckpt``) whose decision
to replace the saved epoch is the rule's, and which keeps the selected epoch (1-based: epoch ``e`` is the
state after ``e`` epochs of training, as the progress lines and the report count) and that epoch's
validation values. Its state is saved in every checkpoint, so a run resumed from ``last.ckpt`` continues
the same selection and reports the epoch an uninterrupted run reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from divergence_lab.ground.record_format import SELECTED_CHECKPOINT
from divergence_lab.metrics.names import checkpoint_mode
from divergence_lab.metrics.selection import SelectionRule
from divergence_lab.run.folder import tests_last_epoch

BEST_CHECKPOINT = Path(SELECTED_CHECKPOINT).stem  # ModelCheckpoint's file name, without its .ckpt
LAST_EPOCH_RULE = "last epoch (method.checkpoint_selection: last)"


def selection_rule(cfg: DictConfig) -> SelectionRule | None:
    """The rule that picks the tested epoch, or None for methods that test their last epoch."""
    if tests_last_epoch(cfg):
        return None
    return SelectionRule(cfg.optimized_metric, str(cfg.checkpoint_selection.tie_break))


def describe_selection(rule: SelectionRule | None) -> str:
    """The ``checkpoint_selection`` entry of ``metrics.json``."""
    return LAST_EPOCH_RULE if rule is None else rule.describe()


def validation_values(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{name: float}`` of the ``val/`` entries of Lightning's callback metrics."""
    return {name: float(value) for name, value in metrics.items() if name.startswith("val/")}


class SelectedCheckpoint(ModelCheckpoint):
    """``best.ckpt`` = the epoch ``rule`` selects; :attr:`selected_epoch` and :attr:`selected_validation`
    describe it (0 and empty before the first validated epoch)."""

    def __init__(self, dirpath: Any, rule: SelectionRule) -> None:
        super().__init__(
            dirpath,
            BEST_CHECKPOINT,
            rule.metric,
            mode=checkpoint_mode(rule.metric),
            enable_version_counter=False,
        )
        self.rule = rule
        self.selected_epoch = 0
        self.selected_validation: dict[str, float] = {}

    def check_monitor_top_k(self, trainer: Any, current: Any = None) -> bool:
        """Whether this epoch replaces the saved one (then Lightning saves it at once): the rule's answer,
        agreed by every process. The epoch and its validation values are remembered here."""
        if current is None:
            return False
        candidate = validation_values(trainer.callback_metrics)
        missing = [name for name in self.rule.required() if name not in candidate]
        if missing:
            raise RuntimeError(
                f"checkpoint selection needs {', '.join(missing)} every epoch; the method logged "
                f"{', '.join(sorted(candidate)) or 'no validation metric'}"
            )
        incumbent = self.selected_validation if self.best_k_models else None
        replace = trainer.strategy.reduce_boolean_decision(self.rule.prefers(candidate, incumbent))
        if replace:
            self.selected_epoch = trainer.current_epoch + 1
            self.selected_validation = candidate
        return replace

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "selected_epoch": self.selected_epoch,
            "selected_validation": dict(self.selected_validation),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # restored with Lightning's best score, under the same condition: the same checkpoint folder
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            self.selected_epoch = int(state_dict.get("selected_epoch", 0))
            self.selected_validation = dict(state_dict.get("selected_validation", {}))
