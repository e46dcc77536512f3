"""``method=pld``: Plackett-Luce list-wise distillation (Bassam, Zhu, Bian 2025).

The student minimises only the registry's ``pld`` ranking loss: the teacher-weighted Plackett-Luce
likelihood of the teacher-optimal ranking (true label first, then the other classes by descending teacher
logit), with weights softmax(teacher / τ_T) and unsoftened student logits. There is no separate CE term and
no mixing weight to tune: CE is the special case of one-hot weights (``method.ranking.weights=onehot``).
The teacher is the cached, frozen teacher of offline KD; ``divergence=`` is not used.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from divergence_lab.methods.kd import DistillationModule, configured_divergence, frozen_teacher
from divergence_lab.methods.stages import StageOutput
from divergence_lab.models import build_network


class PlackettLuceDistillation(DistillationModule):
    """Offline KD whose whole objective is the ``pld`` ranking loss (``alpha`` = 1, no CE)."""

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        student = self(x)
        loss = self.distillation(student, self.teacher_logits(x), y)
        return {"loss": loss, "pld": loss.detach(), "ce": F.cross_entropy(student, y).detach()}


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> PlackettLuceDistillation:
    """PLD of ``cfg.model`` from the cached teacher, with ``cfg.method.ranking`` as the pld parameters."""
    return PlackettLuceDistillation(
        net=build_network(cfg.model, datamodule),
        teacher=frozen_teacher(cfg, datamodule, outputs),
        divergence=configured_divergence("method.ranking", "pld", **cfg.method.ranking),
        alpha=1.0,
        num_classes=datamodule.num_classes,
        optimizer=dict(cfg.method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
    )
