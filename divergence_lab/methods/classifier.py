"""The base every method shares: a network, its optimiser, and the common evaluation metrics.

Subclasses implement :meth:`ClassifierModule.losses`, returning named loss terms whose ``"loss"`` entry
is optimised; every term is logged as ``train/<name>``. Evaluation is the same for every method, so runs
compare directly: ``val/acc``, ``val/nll`` each epoch, and ``test/acc``, ``test/ece`` (15-bin L1
calibration error), ``test/nll`` at the end.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from divergence_lab.config_checks import check_optimizer

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def make_optimizer(
    parameters, optimizer: dict[str, Any], max_epochs: int
) -> dict[str, Any] | torch.optim.Optimizer:
    """Build ``torch.optim`` objects from ``{name, lr, weight_decay, momentum?, scheduler?}``."""
    kwargs = {"lr": optimizer["lr"], "weight_decay": optimizer.get("weight_decay", 0.0)}
    if optimizer["name"] == "sgd":
        kwargs.update(momentum=optimizer.get("momentum", 0.9), nesterov=optimizer.get("nesterov", False))
    opt = OPTIMIZERS[optimizer["name"]](parameters, **kwargs)
    if optimizer.get("scheduler", "none") == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, max_epochs))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
    return opt


class ClassifierModule(L.LightningModule):
    """A trained network ``net`` with the shared metrics; ``losses`` defines the training objective."""

    def __init__(self, net: nn.Module, num_classes: int, optimizer: dict[str, Any], max_epochs: int) -> None:
        super().__init__()
        check_optimizer(optimizer, "method.optimizer")
        self.net = net
        self.optimizer_config = dict(optimizer)
        self.max_epochs = max_epochs
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_nll = MeanMetric()
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_ece = MulticlassCalibrationError(num_classes, n_bins=15, norm="l1")
        self.test_nll = MeanMetric()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Named loss terms for one batch; ``"loss"`` is the total that is minimised."""
        raise NotImplementedError

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(*batch)
        for name, value in terms.items():
            self.log(f"train/{name}", value.detach(), on_step=False, on_epoch=True, prog_bar=name == "loss")
        return terms["loss"]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.val_nll(F.cross_entropy(logits.float(), y, reduction="none"))
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/nll", self.val_nll)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x).float()
        self.test_acc(logits, y)
        self.test_ece(logits.softmax(-1), y)
        self.test_nll(F.cross_entropy(logits, y, reduction="none"))
        self.log("test/acc", self.test_acc)
        self.log("test/ece", self.test_ece)
        self.log("test/nll", self.test_nll)

    def configure_optimizers(self):
        return make_optimizer(self.net.parameters(), self.optimizer_config, self.max_epochs)
