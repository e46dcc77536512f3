"""Masks over a network's prunable weights (every Linear and Conv weight; biases and norms stay dense).

A mask is a list of boolean tensors, one per prunable weight, in :func:`prunable_weights` order. Tickets
are chosen globally: :func:`global_top_k` keeps exactly ``round(density · d)`` weights over the whole
network, ``d`` being the number of prunable weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from divergence_lab.ground.errors import ConfigError

Mask = list[Tensor]


def prunable_weights(net: nn.Module) -> list[nn.Parameter]:
    return [m.weight for m in net.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)]


def kept_count(total: int, density: float) -> int:
    if not 0.0 < density <= 1.0:
        raise ConfigError(f"method.density must be in (0, 1] (got {density})")
    return max(1, round(density * total))


def global_top_k(scores: list[Tensor], density: float) -> Mask:
    """Keep the ``round(density · d)`` highest scores over all layers (ties broken by position)."""
    flat = torch.cat([s.detach().flatten() for s in scores])
    keep = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat, kept_count(len(flat), density), sorted=False).indices] = True
    parts = keep.split([s.numel() for s in scores])
    return [part.view_as(s) for part, s in zip(parts, scores, strict=True)]


def scores_within(mask: Mask, scores: list[Tensor]) -> list[Tensor]:
    """``scores`` with the already-pruned weights set to -1, below any kept score (all scores are >= 0)."""
    return [torch.where(keep, s, torch.full_like(s, -1.0)) for s, keep in zip(scores, mask, strict=True)]


def apply_mask(net: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    with torch.no_grad():
        for weight, keep in zip(prunable_weights(net), mask, strict=True):
            weight.mul_(keep.to(weight.dtype))


def density(mask: Mask) -> float:
    return sum(int(m.sum()) for m in mask) / sum(m.numel() for m in mask)


def layer_densities(mask: Mask) -> list[float]:
    return [float(m.float().mean()) for m in mask]


def shuffle_within_layers(mask: Mask, generator: torch.Generator) -> Mask:
    """Sanity check: permute each layer's mask at random, keeping every layer's number of kept weights."""
    return [m.flatten()[torch.randperm(m.numel(), generator=generator)].view_as(m) for m in mask]
