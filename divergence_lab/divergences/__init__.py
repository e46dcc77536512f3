"""Registry of divergences between a teacher (target) and a student distribution over classes.

Public API::

    from divergence_lab import divergences
    divergences.names()                       # sorted list of registered names
    d = divergences.build("gjs", beta=0.3, temperature=2.0)
    values = d(student_logits, teacher_logits, mask=None)   # (N,) per-row values, no reduction

See :mod:`divergence_lab.divergences.base` for the calling convention, dtype rules, masks and the
``kind`` mechanism; member formulas are in the class docstrings of ``fdivergences``, ``families`` and
``transport``. Importing this package needs only torch.
"""

from divergence_lab.divergences import families, fdivergences, transport  # noqa: F401  (registration)
from divergence_lab.divergences.base import Divergence, PointwiseDivergence, build, names, register

__all__ = ["Divergence", "PointwiseDivergence", "build", "names", "register"]
