"""Registry of divergences between a teacher (target) and a student distribution over classes.

Public API::

    from divergence_lab import divergences
    divergences.names()                       # sorted list of registered names
    d = divergences.build("gjs", beta=0.3, temperature=2.0)
    values = d(student_logits, teacher_logits, mask=None)   # (N,) per-row values, no reduction

How one call is computed, from ``d(...)`` down to the member's ``_pointwise`` (its definition) or one of
its optimisations (the fused path, the compiled row kernels), is written out at the top of
:mod:`divergence_lab.divergences.named`. See :mod:`divergence_lab.divergences.base` for the calling
convention, dtype rules, masks and the ``kind`` mechanism. Member formulas are in the class docstrings of
``named`` (kl, rkl, js, tv, hellinger, chi2, ...), ``parametric`` (alpha, fdiv, cs), ``transport``,
``supervised`` (need labels: ``pld``, ``dkd``) and ``batchwise`` (need the whole batch: ``sinkhorn_batch``,
``dist``).
Importing this package needs only torch.
"""

from divergence_lab.divergences import (  # noqa: F401  (registration)
    batchwise,
    named,
    parametric,
    supervised,
    transport,
)
from divergence_lab.divergences.base import Divergence, PointwiseDivergence, build, names, register
from divergence_lab.divergences.fused_linear import fused_linear_divergence

__all__ = ["Divergence", "PointwiseDivergence", "build", "fused_linear_divergence", "names", "register"]
