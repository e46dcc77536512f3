"""Concrete Ticket Search (Arora & Teuscher 2025): learn a mask near initialisation with frozen weights.

One logit ``a_i`` per prunable weight, initialised to ``log(κ / (1 - κ))`` so every weight starts with
keep-probability κ. Each forward draws a Binary-Concrete mask ``m̃ = σ(a + l / τ)``, ``l`` logistic noise,
τ = 2/3, and runs the network with weights ``θ ⊙ m̃``. The objective compares that sparse network with the
same network unmasked (the dense target, detached): any registry divergence ``D(sparse, dense)`` (default
``rkl`` = KL(q_sparse ‖ p_dense), the paper's CTS-KL) or ``ce`` on the labels; times ``loss_scale`` (100).

GRADBALANCE keeps the expected active count ``Σσ(a)`` near ``A* = slack · κ · d`` without a penalty weight:
with ``e = (Σσ(a) / A* - 1) · 100`` and ``g_sp = (100 / A*) σ(a)(1 - σ(a))`` (its gradient), the logits get
``g_task + λ g_sp`` where ``λ* = ‖g_task‖ / ‖g_sp‖`` while ``e > 0`` and 0 once the target is met, smoothed
``λ ← 0.99 λ + 0.01 λ*``. Adam on the logits, learning rate × ``lr_drop_factor`` (0.1) from search epoch
``int(lr_drop_at · E) − 1`` on (:func:`lr_drop_epoch`, as TLAB); ``method.search`` in the method YAML sets all
of these. The ticket keeps exactly ``round(κ · d)`` weights: the global top-k logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from divergence_lab.ground.progress import NO_CHECKPOINT, EpochCheckpoint, StageProgress, mean_of
from divergence_lab.pruning.masks import Mask, global_top_k, prunable_weights

Objective = Callable[[Tensor, Tensor, Tensor], Tensor]  # (sparse logits, dense logits, labels) -> scalar


@dataclass
class SearchResult:
    mask: Mask
    logits: list[Tensor]
    expected_density: list[float] = field(default_factory=list)  # after every step


def _scale_safe_norm(values: list[Tensor]) -> Tensor:
    flat = torch.cat([v.flatten() for v in values])
    scale = flat.abs().max().clamp_min(1e-12)
    return (flat / scale).norm() * scale


def lr_drop_epoch(epochs: int, lr_drop_at: float) -> int | None:
    """The first (0-based) search epoch at the dropped learning rate: ``int(lr_drop_at · epochs) − 1``, or
    None (no drop) when that is below 1.

    TLAB (``search/concrete.py``, ``optimize_mask``) passes ``reduce_epochs = [int(0.88 · E)]`` and, after
    0-based epoch ``e``, scales the rate by 0.1 when ``e + 2`` is in it; so epochs ``0 … int(0.88 E) − 2``
    run at ``lr`` and ``int(0.88 E) − 1 … E − 1`` at ``0.1 lr`` (E = 20: 0 … 15, then 16 … 19; E = 10:
    0 … 6, then 7 … 9), and no drop happens when ``int(0.88 E) < 2``.
    """
    first = int(lr_drop_at * epochs) - 1
    return first if first >= 1 else None


def concrete_search(
    net: nn.Module,
    batches: Callable[[int], Iterable[tuple[Tensor, Tensor]]],
    density: float,
    objective: Objective,
    epochs: int,
    lr: float = 0.1,
    tau: float = 2 / 3,
    slack: float = 1.1,
    smoothing: float = 0.01,
    loss_scale: float = 100.0,
    lr_drop_at: float = 0.88,
    lr_drop_factor: float = 0.1,
    checkpoint: EpochCheckpoint = NO_CHECKPOINT,
) -> SearchResult:
    """Search a ticket of ``density`` for ``net`` (weights untouched); ``batches(epoch)`` yields (x, y).

    Adam's rate is ``lr`` for epochs ``0 … int(lr_drop_at · epochs) − 2`` and ``lr · lr_drop_factor`` from
    epoch ``int(lr_drop_at · epochs) − 1`` on (:func:`lr_drop_epoch`). Every tensor (logits, noise, the
    ticket) lives on the device of ``net``'s weights; ``batches`` must yield batches there. Logs one progress
    line per search epoch: the objective's mean over the epoch (before ``loss_scale``) and the expected
    density after its last step.

    ``checkpoint`` keeps the search's progress after every epoch (the logits, Adam's state, GRADBALANCE's
    multiplier and the density trajectory); a search that finds one continues after its last epoch and
    ends exactly as an uninterrupted one.
    """
    names = {id(parameter): name for name, parameter in net.named_parameters()}
    weights = prunable_weights(net)
    keys = [names[id(w)] for w in weights]
    total = sum(w.numel() for w in weights)
    logits = [torch.full_like(w, math.log(density / (1 - density)), requires_grad=True) for w in weights]
    optimizer = torch.optim.Adam(logits, lr=lr)
    target = slack * density * total if slack else density * total
    multiplier: Tensor | None = None
    was_training = net.training
    net.eval()
    result = SearchResult(mask=[], logits=logits)
    frozen = [w.detach() for w in weights]
    drop_epoch = lr_drop_epoch(epochs, lr_drop_at)
    first = 0
    if (resumed := checkpoint.load()) is not None:
        first, state = resumed
        with torch.no_grad():
            for a, saved in zip(logits, state["logits"], strict=True):
                a.copy_(saved)
        optimizer.load_state_dict(state["optimizer"])
        multiplier = None if state["multiplier"] is None else state["multiplier"].to(frozen[0].device)
        result.expected_density = list(state["expected_density"])
    progress = StageProgress("cts search", epochs, start=first)
    if first:
        progress.resuming(first)
    for epoch in range(first, epochs):
        if epoch == drop_epoch:
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_drop_factor
        losses = []
        for x, y in batches(epoch):
            with torch.no_grad():
                dense = net(x)
            soft = []
            for a in logits:
                u = torch.rand_like(a).clamp(1e-10, 1 - 1e-10)
                soft.append(torch.sigmoid(a + (u.log() - (-u).log1p()) / tau))
            sparse = functional_call(
                net, {k: w * m for k, w, m in zip(keys, frozen, soft, strict=True)}, (x,)
            )
            loss = objective(sparse, dense, y)
            task_grad = torch.autograd.grad(loss_scale * loss, logits)
            losses.append(loss.detach())
            with torch.no_grad():
                keep = [torch.sigmoid(a) for a in logits]
                excess = (sum(k.sum() for k in keep) / target - 1) * 100
                sparsity_grad = [(100 / target) * k * (1 - k) for k in keep]
                wanted = (
                    _scale_safe_norm(list(task_grad)) / _scale_safe_norm(sparsity_grad).clamp_min(1e-12)
                    if excess > 0
                    else torch.zeros((), device=frozen[0].device)
                )
                multiplier = (
                    wanted if multiplier is None else (1 - smoothing) * multiplier + smoothing * wanted
                )
                for a, g_task, g_sp in zip(logits, task_grad, sparsity_grad, strict=True):
                    a.grad = g_task + multiplier * g_sp
            optimizer.step()
            with torch.no_grad():
                result.expected_density.append(float(sum(torch.sigmoid(a).sum() for a in logits) / total))
        values = {"objective": mean_of(losses), "expected density": result.expected_density[-1]}
        checkpoint.save(
            epoch + 1,
            {
                "logits": [a.detach().cpu() for a in logits],
                "optimizer": optimizer.state_dict(),
                "multiplier": None if multiplier is None else multiplier.detach().cpu(),
                "expected_density": list(result.expected_density),
            },
        )
        progress.step(epoch + 1, values)
    net.train(was_training)
    result.mask = global_top_k(logits, density)
    return result
