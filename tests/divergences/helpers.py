"""Call any registry member uniformly in generic tests: members that need labels get some."""

from __future__ import annotations

import torch

from divergence_lab import divergences


def call(d: divergences.Divergence, student: torch.Tensor, teacher: torch.Tensor, **kwargs) -> torch.Tensor:
    if "labels" in d.requires:
        kwargs["labels"] = torch.arange(student.shape[0]) % student.shape[1]
    return d(student, teacher, **kwargs)


POINTWISE = [name for name in divergences.names() if divergences.build(name).kind == "pointwise"]
