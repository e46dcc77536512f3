"""``method=pld``: Plackett-Luce list-wise distillation (Bassam, Zhu, Bian 2025).

The student minimises only the registry's ``pld`` ranking loss: the teacher-weighted Plackett-Luce
likelihood of the teacher-optimal ranking (true label first, then the other classes by descending teacher
logit), with weights softmax(teacher / τ_T) and unsoftened student logits. There is no separate CE term and
no mixing weight to tune: CE is the special case of one-hot weights (``method.ranking.weights=onehot``).
The teacher is the cached, frozen teacher of offline KD; ``divergence=`` is not used.

A preset may declare the published test accuracy of its teacher, ``method.teacher_reference: {acc: <top-1
in [0, 1]>, source: <where it is published>}``. The run then tests the teacher beside the student
(``test/teacher_acc``, ``test/teacher_nll`` ... in ``metrics.json``), records the reference next to it
(``test/teacher_acc_reference``) and logs one line with both and their difference in points.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.kd import DistillationModule, configured_divergence, frozen_teacher
from divergence_lab.methods.stages import StageOutput
from divergence_lab.models import build_network

log = logging.getLogger(__name__)

TEACHER_PREFIX = "teacher_"  # the teacher's test metrics: test/teacher_acc, test/teacher_nll, ...
REFERENCE_METRIC = "test/teacher_acc_reference"  # the declared reference, beside test/teacher_acc
POINTS_PER_UNIT = 100  # accuracies are fractions; differences are reported in percentage points


@dataclass(frozen=True)
class TeacherReference:
    """A published top-1 test accuracy of the teacher (a fraction) and where it is published."""

    acc: float
    source: str


def teacher_reference(value: Any) -> TeacherReference | None:
    """``method.teacher_reference`` as a :class:`TeacherReference` (None when unset); anything but
    ``{acc: a number in [0, 1], source: text}`` is refused in one line."""
    if value is None:
        return None
    acc = value.get("acc") if isinstance(value, (dict, DictConfig)) else None
    source = value.get("source") if isinstance(value, (dict, DictConfig)) else None
    number = isinstance(acc, (int, float)) and not isinstance(acc, bool) and math.isfinite(acc)
    if not (number and 0.0 <= acc <= 1.0 and isinstance(source, str) and source.strip()):
        raise ConfigError(
            "method.teacher_reference must be {acc: a top-1 accuracy in [0, 1], source: where it is "
            f"published}} (got {value!r})"
        )
    return TeacherReference(float(acc), source)


def check_settings(method: DictConfig) -> None:
    """The pre-flight's check of PLD's own settings: ``method.teacher_reference``."""
    teacher_reference(method.get("teacher_reference"))


def teacher_comparison(measured: float, reference: TeacherReference) -> str:
    """``teacher test acc 0.7190 against the reference 0.7234 (<source>): -0.44 pt``."""
    gap = POINTS_PER_UNIT * (measured - reference.acc)
    return (
        f"teacher test acc {measured:.4f} against the reference {reference.acc:.4f} ({reference.source}): "
        f"{gap:+.2f} pt"
    )


class PlackettLuceDistillation(DistillationModule):
    """Offline KD whose whole objective is the ``pld`` ranking loss (``alpha`` = 1, no CE).

    With a ``reference`` the teacher is evaluated beside the student and compared with it after the test.
    """

    def __init__(self, *args: Any, reference: TeacherReference | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reference = reference

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        student = self(x)
        loss = self.distillation(student, self.teacher_logits(x), y)
        return {"loss": loss, "pld": loss.detach(), "ce": F.cross_entropy(student, y).detach()}

    def evaluated_networks(self) -> dict[str, nn.Module]:
        networks = super().evaluated_networks()
        return networks if self.reference is None else {**networks, TEACHER_PREFIX: self.teacher}

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.reference is None:
            return
        measured = float(self.test_metrics[TEACHER_PREFIX].acc.compute())
        self.log(REFERENCE_METRIC, self.reference.acc)
        if self.trainer.is_global_zero:
            log.info(teacher_comparison(measured, self.reference))


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> PlackettLuceDistillation:
    """PLD of ``cfg.model`` from the cached teacher, with ``cfg.method.ranking`` as the pld parameters and
    ``cfg.method.teacher_reference`` (optional) as the teacher's published accuracy."""
    return PlackettLuceDistillation(
        net=build_network(cfg.model, datamodule),
        teacher=frozen_teacher(cfg, datamodule, outputs),
        divergence=configured_divergence("method.ranking", "pld", **cfg.method.ranking),
        alpha=1.0,
        num_classes=datamodule.num_classes,
        optimizer=dict(cfg.method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
        reference=teacher_reference(cfg.method.get("teacher_reference")),
    )
