"""``method=sinkd``: Sinkhorn distillation (Cui et al. 2024), KD plus SinKD's batch-wise OT term.

The student minimises

    (1 − alpha) · CE + alpha · mean_i D(student_i, teacher_i) + beta · scale · R(v)

with ``D`` the ``divergence=`` choice (classic KD: ``kl``) and ``v`` the per-row values of the registry's
``sinkhorn_batch`` (the B × B entropic OT between the batch's student and teacher probability vectors with
L1 cost, T = 2, ε = 0.1, 20 iterations, gradient through the unrolled iterations). ``R`` is ``sum`` (the
official code: its plan has mass B, so the term grows with the batch size) or ``mean`` (the OT cost
between the two empirical distributions). Defaults follow the code's BERT/GLUE setting: beta = 0.8,
scale = 0.001, sum. The official KD term is ``-Σ p_t log q_s`` at the KD temperature without T², so the
SinKD presets set ``divergence.t_squared: false`` (``kl`` differs from that cross-entropy by the teacher's
entropy, a constant: same gradients). ``method.sinkhorn`` holds the ``sinkhorn_batch`` parameters
(``solver: log`` by default; ``multiplicative`` is the paper's exact scaling loop).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from divergence_lab import divergences
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.kd import DistillationModule, configured_divergence, frozen_teacher, warmup_epochs
from divergence_lab.methods.stages import StageOutput
from divergence_lab.models import build_network

REDUCTIONS = ("sum", "mean")


class SinkhornDistillation(DistillationModule):
    """KD with an added batch-wise Sinkhorn term; see the module docstring."""

    def __init__(
        self,
        *args: Any,
        batch_transport: divergences.Divergence,
        transport_weight: float,
        transport_reduction: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if transport_weight < 0:
            raise ConfigError(
                f"method.sinkhorn_weight * method.sinkhorn_scale must be >= 0 (got {transport_weight})"
            )
        if transport_reduction not in REDUCTIONS:
            raise ConfigError(
                f"method.sinkhorn_reduction must be one of {', '.join(REDUCTIONS)} "
                f"(got {transport_reduction!r})"
            )
        self.batch_transport = batch_transport
        self.transport_weight = transport_weight
        self.transport_reduction = transport_reduction

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        student = self(x)
        teacher = self.teacher_logits(x)
        ce = F.cross_entropy(student, y)
        distill = self.distillation(student, teacher, y)
        rows = self.batch_transport(student, teacher)
        transport = rows.sum() if self.transport_reduction == "sum" else rows.mean()
        loss = self.kd_objective(ce, distill) + self.transport_weight * transport
        return {"loss": loss, "ce": ce.detach(), "distill": distill.detach(), "sinkhorn": transport.detach()}


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> nn.Module:
    """SinKD of ``cfg.model`` from the cached teacher: ``cfg.divergence`` plus ``cfg.method.sinkhorn``."""
    method = cfg.method
    return SinkhornDistillation(
        net=build_network(cfg.model, datamodule),
        teacher=frozen_teacher(cfg, datamodule, outputs),
        divergence=divergences.build(**cfg.divergence),
        alpha=method.alpha,
        num_classes=datamodule.num_classes,
        optimizer=dict(method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
        warmup_epochs=warmup_epochs(cfg),
        eval_every_steps=method.eval_every_steps,
        batch_transport=configured_divergence("method.sinkhorn", "sinkhorn_batch", **method.sinkhorn),
        transport_weight=method.sinkhorn_weight * method.sinkhorn_scale,
        transport_reduction=method.sinkhorn_reduction,
    )
