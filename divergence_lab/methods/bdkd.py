"""``method=bdkd`` (and ``method=dml``): online distillation that balances forward and reverse divergences.

BD-KD (Amara et al., arXiv 2212.12965). **This is a reconstruction**: the paper's method section is not
public. Its abstracts fix the setting, which is implemented here: teacher and student are trained together
from scratch (online KD), the student's distillation term is a *sample-wise* weighting of a forward and a
reverse divergence, and the teacher's loss is a student-centred distillation term. The weighting rules
below are our reading, kept switchable because none is confirmed.

With p = softmax(z_t / T) (teacher), q = softmax(z_s / T) (student) and H the Shannon entropy per sample:

* student:  ``L_S = CE(z_s, y) + λ · mean_i[ w_fwd,i · D_fwd(q_i; p_i) + w_rev,i · D_rev(q_i; p_i) ]``
  with ``D_fwd = kl`` = KL(p‖q) and ``D_rev = rkl`` = KL(q‖p) by default (any registry pair works; the T²
  factor belongs to the divergences), the teacher side detached;
* teacher:  ``L_T = CE(z_t, y) + λ_t · mean_i D_t(p_i; q_i)``, default ``D_t = kl`` read with the teacher as
  the trained side, i.e. KL(q‖p) with the student detached (deep mutual learning's teacher term);
* weights (computed without gradient, w_fwd + w_rev = 1, both in [0, 1]):

  - ``entropy_ratio``: ``w_fwd = H(q) / (H(p) + H(q))``, ``w_rev = H(p) / (H(p) + H(q))``;
  - ``sigmoid_gap``:   ``w_fwd = sigmoid((H(q) − H(p)) / γ)``;
  - ``inverted``:      ``entropy_ratio`` with the two weights swapped;
  - ``fixed``:         ``w_fwd = fixed_forward`` for every sample.

  Note: the spec's *rationale* (reverse KL sharpens an under-confident student, forward KL softens an
  over-confident one) points the other way from its ``entropy_ratio`` formula — a less confident student
  (high H(q)) gets *more* forward KL. Both directions are available (``entropy_ratio`` vs ``inverted``)
  and the study ``dlab -m study=bdkd_calibration`` measures both.

DML (Zhang et al. 2018) is the special case ``balance=fixed, fixed_forward=1`` with ``λ_t = λ``.
Both networks are in one optimiser (two parameter groups); every cross term is detached, so the summed
loss gives each network exactly the gradient of its own loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from divergence_lab import divergences
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.classifier import ClassifierModule, make_optimizer, total_optimizer_steps
from divergence_lab.methods.kd import configured_divergence
from divergence_lab.methods.stages import StageOutput
from divergence_lab.models import build_network

BALANCE_RULES = ("entropy_ratio", "sigmoid_gap", "inverted", "fixed")


def entropy(log_probs: Tensor) -> Tensor:
    """Shannon entropy per row, ``-sum_k p_k log p_k`` in nats, from log-probabilities."""
    return -(log_probs.exp() * log_probs).sum(-1)


@torch.no_grad()
def balance_weights(
    student_logits: Tensor,
    teacher_logits: Tensor,
    rule: str,
    temperature: float = 1.0,
    gamma: float = 0.1,
    fixed_forward: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Per-sample ``(w_fwd, w_rev)`` of the forward and reverse terms; no gradient flows through them."""
    if rule == "fixed":
        w_fwd = torch.full(student_logits.shape[:1], float(fixed_forward), device=student_logits.device)
        return w_fwd, 1.0 - w_fwd
    h_q = entropy(F.log_softmax(student_logits.float() / temperature, -1))
    h_p = entropy(F.log_softmax(teacher_logits.float() / temperature, -1))
    if rule == "sigmoid_gap":
        w_fwd = torch.sigmoid((h_q - h_p) / gamma)
        return w_fwd, 1.0 - w_fwd
    total = h_p + h_q
    # two one-hot distributions (both entropies 0) carry no preference: split evenly
    ratio = torch.where(total > 0, h_q / total.clamp_min(torch.finfo(total.dtype).tiny), 0.5)
    if rule == "entropy_ratio":
        return ratio, 1.0 - ratio
    if rule == "inverted":
        return 1.0 - ratio, ratio
    raise ConfigError(f"method.balance must be one of {', '.join(BALANCE_RULES)} (got {rule!r})")


class BalancedOnlineDistillation(ClassifierModule):
    """Student ``net`` and ``teacher`` trained together; see the module docstring for the losses."""

    def __init__(
        self,
        net: nn.Module,
        teacher: nn.Module,
        forward_divergence: divergences.Divergence,
        reverse_divergence: divergences.Divergence,
        teacher_divergence: divergences.Divergence,
        balance: str,
        lambda_student: float,
        lambda_teacher: float,
        num_classes: int,
        optimizer: dict[str, Any],
        teacher_optimizer: dict[str, Any],
        max_epochs: int,
        gamma: float = 0.1,
        fixed_forward: float = 0.5,
    ) -> None:
        super().__init__(net, num_classes, optimizer, max_epochs)
        if balance not in BALANCE_RULES:
            raise ConfigError(f"method.balance must be one of {', '.join(BALANCE_RULES)} (got {balance!r})")
        if not 0.0 <= fixed_forward <= 1.0:
            raise ConfigError(f"method.fixed_forward must be in [0, 1] (got {fixed_forward})")
        if gamma <= 0:
            raise ConfigError(f"method.gamma must be > 0 (got {gamma})")
        if teacher_optimizer["name"] != optimizer["name"]:
            raise ConfigError(
                "method.teacher.optimizer.name must equal method.optimizer.name (one optimiser)"
            )
        for key, value in (("lambda_student", lambda_student), ("lambda_teacher", lambda_teacher)):
            if value < 0:
                raise ConfigError(f"method.{key} must be >= 0 (got {value})")
        self.teacher = teacher
        self.forward_divergence = forward_divergence
        self.reverse_divergence = reverse_divergence
        self.teacher_divergence = teacher_divergence
        self.balance = balance
        self.lambda_student = lambda_student
        self.lambda_teacher = lambda_teacher
        self.teacher_optimizer = dict(teacher_optimizer)
        self.gamma = gamma
        self.fixed_forward = fixed_forward

    def evaluated_networks(self) -> dict[str, nn.Module]:
        return {"": self.net, "teacher_": self.teacher}

    def distilled_teacher(self) -> nn.Module:
        return self.teacher

    def student_loss(self, student: Tensor, teacher: Tensor, y: Tensor) -> dict[str, Tensor]:
        """CE plus the balanced forward/reverse term; ``teacher`` logits are used detached."""
        target = teacher.detach()
        w_fwd, w_rev = balance_weights(
            student, target, self.balance, self.forward_divergence.temperature, self.gamma, self.fixed_forward
        )
        forward = self.forward_divergence(student, target)
        reverse = self.reverse_divergence(student, target)
        distill = (w_fwd * forward + w_rev * reverse).mean()
        ce = F.cross_entropy(student, y)
        return {
            "student_loss": ce + self.lambda_student * distill,
            "student_ce": ce,
            "distill": distill,
            "w_fwd": w_fwd.mean(),
            "kl_forward": forward.mean(),
            "kl_reverse": reverse.mean(),
        }

    def teacher_loss(self, teacher: Tensor, student: Tensor, y: Tensor) -> dict[str, Tensor]:
        """CE plus the student-centred term with the student detached (the teacher is the trained side)."""
        ce = F.cross_entropy(teacher, y)
        towards_student = self.teacher_divergence(teacher, student.detach()).mean()
        return {"teacher_loss": ce + self.lambda_teacher * towards_student, "teacher_ce": ce}

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        student, teacher = self.net(x), self.teacher(x)
        terms = {**self.student_loss(student, teacher, y), **self.teacher_loss(teacher, student, y)}
        loss = terms["student_loss"] + terms["teacher_loss"]
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}

    def configure_optimizers(self):
        teacher_group = {
            "params": list(self.teacher.parameters()),
            "lr": self.teacher_optimizer["lr"],
            "weight_decay": self.teacher_optimizer.get("weight_decay", 0.0),
        }
        groups = [{"params": list(self.net.parameters())}, teacher_group]
        steps = total_optimizer_steps(self, self.optimizer_config)
        return make_optimizer(groups, self.optimizer_config, self.max_epochs, steps)


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> BalancedOnlineDistillation:
    """Student ``cfg.model`` and teacher ``cfg.method.teacher.model``, both trained from scratch."""
    method = cfg.method
    temperature = method.temperature

    def divergence(role: str) -> divergences.Divergence:
        name = method.divergences[role]
        return configured_divergence(
            f"method.divergences.{role}", name, temperature=temperature, t_squared=True
        )

    return BalancedOnlineDistillation(
        net=build_network(cfg.model, datamodule),
        teacher=build_network(method.teacher.model, datamodule),
        forward_divergence=divergence("forward"),
        reverse_divergence=divergence("reverse"),
        teacher_divergence=divergence("teacher"),
        balance=method.balance,
        lambda_student=method.lambda_student,
        lambda_teacher=method.lambda_teacher,
        num_classes=datamodule.num_classes,
        optimizer=dict(method.optimizer),
        teacher_optimizer=dict(method.teacher.optimizer),
        max_epochs=cfg.trainer.max_epochs,
        gamma=method.gamma,
        fixed_forward=method.fixed_forward,
    )
