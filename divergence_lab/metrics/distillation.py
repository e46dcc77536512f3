"""How closely a student follows its teacher on held-out data: top-1 agreement and KL(teacher ‖ student).

For ``N`` examples with student logits ``s_i`` and teacher logits ``t_i`` (``C`` classes):

* ``agreement = (1/N) Σ_i 1[argmax_k s_ik = argmax_k t_ik]``, the fraction of examples on which the two
  networks predict the same class (ties in an argmax go to the lowest index, as ``torch.argmax``);
* ``kl_teacher_student = (1/N) Σ_i KL(p_i ‖ q_i) = (1/N) Σ_i Σ_k p_ik (log p_ik − log q_ik)`` in nats, with
  ``p_i = softmax(t_i)`` and ``q_i = softmax(s_i)`` at temperature 1 whatever the training temperature: the
  forward KL that classic KD minimises, computed from ``log_softmax`` (never the log of a softmax).

Both are torchmetrics states (summed over batches and, under DDP, over processes).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import KLDivergence, Metric
from torchmetrics.classification import MulticlassAccuracy


class TeacherStudentMetrics(nn.Module):
    """``agreement`` and ``kl_teacher_student`` of one student against one teacher (module docstring)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        # the teacher's top-1 class is the target: micro accuracy of the student against it = agreement
        self.agreement = MulticlassAccuracy(num_classes, average="micro")
        self.kl_teacher_student = KLDivergence(log_prob=True, reduction="mean")

    def update(self, student_logits: Tensor, teacher_logits: Tensor) -> None:
        """Add a batch of ``(N, C)`` student and teacher logits."""
        self.agreement.update(student_logits, teacher_logits.argmax(-1))
        self.kl_teacher_student.update(
            F.log_softmax(teacher_logits.float(), -1), F.log_softmax(student_logits.float(), -1)
        )

    def named(self, prefix: str) -> dict[str, Metric]:
        """``{f"{prefix}agreement": metric, f"{prefix}kl_teacher_student": metric}`` for ``self.log``."""
        return {f"{prefix}{name}": metric for name, metric in self.named_children()}
