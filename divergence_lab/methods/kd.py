"""``method=kd``: Hinton-style offline knowledge distillation, and the base of every offline-KD method.

The student minimises ``(1 - alpha) * CE(student, y) + alpha * mean_i D(student_i, teacher_i)`` where
``D`` is any registry divergence (``divergence=kl`` is classic KD; temperature and the T² factor belong to
the divergence config). A divergence named in ``method.divergence_warmup`` is ramped in linearly:
the KD term is multiplied by ``min(e / W, 1)`` in (1-based) epoch ``e`` with ``W`` its warm-up epochs, as
mdistiller does for DKD (``W = 20``). The teacher is frozen, kept in eval mode, and comes from the teacher
cache, so a sweep over divergences and seeds trains it once. ``method.eval_every_steps`` (null: off) adds
the optimistic best-of-evaluations test accuracy (:mod:`divergence_lab.metrics.best_of_evals`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from divergence_lab import divergences
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.classifier import ClassifierModule
from divergence_lab.methods.stages import Stage, StageContext, StageOutput, cpu_state, network_from_state
from divergence_lab.models import build_network


class DistillationModule(ClassifierModule):
    """A student trained against a frozen ``teacher`` through a registry ``divergence``."""

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module,
        divergence: divergences.Divergence,
        alpha: float,
        num_classes: int,
        optimizer: dict[str, Any],
        max_epochs: int,
        warmup_epochs: int = 0,
        eval_every_steps: int | None = None,
    ) -> None:
        super().__init__(net, num_classes, optimizer, max_epochs, eval_every_steps=eval_every_steps)
        self.teacher = teacher.eval().requires_grad_(False)
        self.divergence = divergence
        self.alpha = alpha
        self.warmup_epochs = warmup_epochs

    def warmup_factor(self) -> float:
        """``min((current_epoch + 1) / warmup_epochs, 1)`` (1 without a warm-up): mdistiller's ramp."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min((self.current_epoch + 1) / self.warmup_epochs, 1.0)

    def kd_objective(self, ce: Tensor, distill: Tensor) -> Tensor:
        """``(1 - alpha) · ce + alpha · warmup_factor · distill``: the loss of :meth:`losses`."""
        return (1.0 - self.alpha) * ce + self.alpha * self.warmup_factor() * distill

    def train(self, mode: bool = True) -> DistillationModule:
        """Switch the student's mode; the teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def distilled_teacher(self) -> nn.Module:
        return self.teacher

    def teacher_logits(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.teacher(x)

    def distillation(self, student: Tensor, teacher: Tensor, y: Tensor) -> Tensor:
        """Batch mean of the registry divergence; members that need labels (``dkd``, ``pld``) get ``y``."""
        extra = {"labels": y} if "labels" in self.divergence.requires else {}
        return self.divergence(student, teacher, **extra).mean()

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        student = self(x)
        ce = F.cross_entropy(student, y)
        distill = self.distillation(student, self.teacher_logits(x), y)
        return {"loss": self.kd_objective(ce, distill), "ce": ce.detach(), "distill": distill.detach()}


def configured_divergence(key: str, name: str, **params: Any) -> divergences.Divergence:
    """The registry member configured at ``key``; a refusal names the key (``method.sinkhorn: ...``)."""
    try:
        return divergences.build(name, **params)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from None


def warmup_epochs(cfg: DictConfig) -> int:
    """Warm-up epochs of the configured divergence in ``method.divergence_warmup`` (0: none; the values are
    checked with the config, as ``conf/method/kd.yaml`` declares under ``accepts``)."""
    return int((cfg.method.get("divergence_warmup") or {}).get(cfg.divergence.name, 0))


def stages(cfg: DictConfig, datamodule: Any) -> list[Stage]:
    """Stage ``teacher``: the trained teacher of ``cfg.method.teacher`` (from the teacher cache, trained on
    first use), its weights kept in the run folder."""

    def teacher(context: StageContext) -> StageOutput:
        return {"state": cpu_state(context.trained_teacher(cfg.method.teacher))}

    return [Stage("teacher", teacher)]


def frozen_teacher(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> nn.Module:
    """The teacher network of the ``teacher`` stage's output, in eval mode, without gradients."""
    net = network_from_state(
        lambda: build_network(cfg.method.teacher.model, datamodule), outputs["teacher"]["state"]
    )
    return net.eval().requires_grad_(False)


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> DistillationModule:
    """KD of ``cfg.model`` from the cached teacher with ``cfg.divergence``."""
    return DistillationModule(
        net=build_network(cfg.model, datamodule),
        teacher=frozen_teacher(cfg, datamodule, outputs),
        divergence=divergences.build(**cfg.divergence),
        alpha=cfg.method.alpha,
        num_classes=datamodule.num_classes,
        optimizer=dict(cfg.method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
        warmup_epochs=warmup_epochs(cfg),
        eval_every_steps=cfg.method.eval_every_steps,
    )
