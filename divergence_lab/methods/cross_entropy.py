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
    """Minimises ``CE(softmax(net(x)), y)`` over a batch of ``B`` examples: ``(1/B) Σ_i CE_i`` with
    ``loss_reduction="mean"``, ``Σ_i CE_i`` with ``"sum"`` (TLAB's, so a gradient-norm clip bites ``B``
    times sooner); ``train/ce`` is the batch mean either way."""

    def __init__(self, *args: Any, loss_reduction: str = "mean", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_reduction = loss_reduction

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        loss = F.cross_entropy(self(x), y, reduction=self.loss_reduction)
        mean = loss if self.loss_reduction == "mean" else loss / y.shape[0]
        return {"loss": loss, "ce": mean.detach()}


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> CrossEntropyModule:
    """Cross-entropy training of ``cfg.model``."""
    net = build_network(cfg.model, datamodule)
    return CrossEntropyModule(net, datamodule.num_classes, dict(cfg.method.optimizer), cfg.trainer.max_epochs)
