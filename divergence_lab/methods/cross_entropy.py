"""``method=teacher``: train a network with cross-entropy alone. Also trains the cached KD teachers."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from divergence_lab.methods.classifier import ClassifierModule
from divergence_lab.methods.stages import StageOutput
from divergence_lab.models import build_network


class CrossEntropyModule(ClassifierModule):
    """Minimises ``CE(softmax(net(x)), y)``."""

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        loss = F.cross_entropy(self(x), y)
        return {"loss": loss, "ce": loss.detach()}


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> CrossEntropyModule:
    """Cross-entropy training of ``cfg.model``."""
    net = build_network(cfg.model, datamodule)
    return CrossEntropyModule(net, datamodule.num_classes, dict(cfg.method.optimizer), cfg.trainer.max_epochs)
