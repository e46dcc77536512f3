"""One-shot saliency scores at initialisation: keep the weights with the highest score (global top-k).

* ``random``: i.i.d. uniform scores;  ``magnitude``: ``|θ|``;
* ``snip`` (Lee et al. 2019): ``|θ ⊙ ∂L/∂θ|`` with the cross-entropy ``L`` on a few batches;
* ``grasp`` (Wang et al. 2020): GraSP removes the weights with the largest ``-θ ⊙ Hg`` (``g = ∂L/∂θ``,
  ``H`` the Hessian), so the kept score is ``θ ⊙ Hg``;
* ``synflow`` (Tanaka et al. 2020): data-free; ``|θ ⊙ ∂R/∂θ|`` with ``R = 1ᵀ f(1; |θ|)`` the synaptic flow
  of the all-ones input through the network with absolute weights, re-scored over ``rounds`` rounds
  while the density shrinks exponentially to the target.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from divergence_lab.pruning.masks import Mask, apply_mask, global_top_k, prunable_weights, scores_within


def random_scores(net: nn.Module, generator: torch.Generator) -> list[Tensor]:
    return [torch.rand(w.shape, generator=generator) for w in prunable_weights(net)]


def magnitude_scores(net: nn.Module) -> list[Tensor]:
    return [w.detach().abs() for w in prunable_weights(net)]


def _loss_gradients(net: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], create_graph: bool = False):
    weights = prunable_weights(net)
    total = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        grads = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=create_graph)
        total = [t + g for t, g in zip(total, grads, strict=True)]
    return weights, total


def snip_scores(net: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    weights, grads = _loss_gradients(net, batches)
    return [(w * g).detach().abs() for w, g in zip(weights, grads, strict=True)]


def grasp_scores(net: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """``θ ⊙ Hg``: the Hessian-gradient product by double back-propagation."""
    weights, grads = _loss_gradients(net, batches)
    grads = [g.detach() for g in grads]
    hessian_grad = [torch.zeros_like(w) for w in weights]
    for x, y in batches:
        first = torch.autograd.grad(F.cross_entropy(net(x), y), weights, create_graph=True)
        inner = sum((f * g).sum() for f, g in zip(first, grads, strict=True))
        second = torch.autograd.grad(inner, weights)
        hessian_grad = [h + s for h, s in zip(hessian_grad, second, strict=True)]
    return [(w * h).detach() for w, h in zip(weights, hessian_grad, strict=True)]


def synflow_mask(net: nn.Module, input_shape: tuple[int, ...], density: float, rounds: int = 100) -> Mask:
    """Iterative SynFlow: ``rounds`` re-scorings at densities ``density^(k/rounds)``."""
    probe = copy.deepcopy(net).double().eval()
    with torch.no_grad():
        for parameter in probe.parameters():
            parameter.abs_()
    original = [w.detach().clone() for w in prunable_weights(probe)]
    mask = [torch.ones_like(w, dtype=torch.bool) for w in original]
    ones = torch.ones(1, *input_shape, dtype=torch.float64, device=original[0].device)
    for k in range(1, rounds + 1):
        with torch.no_grad():
            for weight, start, keep in zip(prunable_weights(probe), original, mask, strict=True):
                weight.copy_(start * keep)
        weights = prunable_weights(probe)
        grads = torch.autograd.grad(probe(ones).sum(), weights)
        scores = [(w * g).detach().abs().float() for w, g in zip(weights, grads, strict=True)]
        scores = scores_within(mask, scores)
        mask = global_top_k(scores, density ** (k / rounds))
    return mask


def prune_by_magnitude(net: nn.Module, mask: Mask, density: float) -> Mask:
    """One LTR round: among the kept weights, keep the largest ``|θ|`` down to ``density`` overall."""
    new_mask = global_top_k(scores_within(mask, magnitude_scores(net)), density)
    apply_mask(net, new_mask)
    return new_mask
