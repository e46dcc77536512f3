"""Pruning methods under one interface: ``method=cts`` (Concrete Ticket Search) and ``method=prune``
(``method.pruner`` = random | magnitude | snip | grasp | synflow | ltr).

A run has two stages (:mod:`divergence_lab.methods.stages`; saved in the run directory, run on the trainer's
device): ``rewind`` (1) draws the network and trains it densely for ``rewind_epochs`` (the rewind point;
0 = initialisation); ``search`` (2) chooses a mask of exactly ``round(density · d)`` prunable weights,
timed as the search. The builder then (3) applies a
sanity check if asked (``shuffle`` within layers, ``invert`` the scores, ``reinit`` the weights), and
(4) trains the sparse network from the rewind point with the mask held fixed: pruned weights are zeroed
after every optimiser step, so they stay exactly zero. ``ltr`` is iterative magnitude pruning with
rewinding: train ``epochs_per_round``, drop ``prune_fraction`` of the remaining weights by magnitude, rewind,
until the target density. Test metrics add ``test/density`` (exact, from the trained weights) and
``test/search_time_s``; ``density_trajectory.json`` holds the CTS search's expected density per step.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from divergence_lab import divergences
from divergence_lab.methods.cross_entropy import CrossEntropyModule
from divergence_lab.methods.progress import StageProgress, mean_of
from divergence_lab.methods.stages import Stage, StageContext, StageOutput, cpu_state, network_from_state
from divergence_lab.models import build_network
from divergence_lab.pruning import saliency
from divergence_lab.pruning.concrete import concrete_search
from divergence_lab.pruning.masks import (
    Mask,
    apply_mask,
    global_top_k,
    kept_count,
    prunable_weights,
    shuffle_within_layers,
)


class SparseModule(CrossEntropyModule):
    """Cross-entropy training of a network whose pruned weights are re-zeroed after every step."""

    def __init__(self, net: nn.Module, mask: Mask, search_time_s: float, **kwargs: Any) -> None:
        super().__init__(net, **kwargs)
        for index, keep in enumerate(mask):
            self.register_buffer(f"mask_{index}", keep)
        self.search_time_s = search_time_s

    @property
    def mask(self) -> Mask:
        return [getattr(self, f"mask_{i}") for i in range(len(prunable_weights(self.net)))]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        apply_mask(self.net, self.mask)

    def on_test_epoch_end(self) -> None:
        weights = prunable_weights(self.net)
        nonzero = sum(int((w != 0).sum()) for w in weights)
        self.log("test/density", nonzero / sum(w.numel() for w in weights))
        self.log("test/search_time_s", self.search_time_s)


def epochs_of(datamodule: Any, device: torch.device) -> Callable[[int], Iterator[Any]]:
    """``batches(epoch)`` over the training loader on ``device``, in the data module's (seed, epoch) order."""
    loader = datamodule.train_dataloader()

    def batches(epoch: int) -> Any:
        loader.sampler.set_epoch(epoch)
        return ((x.to(device), y.to(device)) for x, y in loader)

    return batches


def train_plain(
    net: nn.Module,
    batches: Any,
    epochs: int,
    optimizer_cfg: DictConfig,
    mask: Mask | None = None,
    stage: str = "rewind",
) -> None:
    """SGD with ``method.optimizer``'s learning rate and momentum (rewind pre-training, LTR rounds),
    re-applying ``mask`` after every step.

    Logs one progress line per epoch, named ``stage``, with the epoch's mean training loss.
    """
    optimizer = torch.optim.SGD(net.parameters(), lr=optimizer_cfg.lr, momentum=optimizer_cfg.momentum)
    net.train()
    progress = StageProgress(stage, epochs)
    for epoch in range(epochs):
        losses = []
        for x, y in batches(epoch):
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            losses.append(loss.detach())
            optimizer.step()
            if mask is not None:
                apply_mask(net, mask)
        progress.step(epoch + 1, {"loss": mean_of(losses)})


def ltr_densities(total: int, density: float, prune_fraction: float) -> list[float]:
    """The density after each LTR round: ``prune_fraction`` of the remaining weights per round, down to
    ``density`` (the last round stops exactly there)."""
    densities, current = [], 1.0
    while kept_count(total, current) > kept_count(total, density):
        current = max(density, current * (1 - prune_fraction))
        densities.append(current)
    return densities


def search_objective(method: DictConfig, divergence_cfg: DictConfig):
    """``D(sparse, dense)`` from the registry (batch mean), or cross-entropy on the labels (``ce``)."""
    if method.search.objective == "ce":
        return lambda sparse, dense, y: F.cross_entropy(sparse, y)
    divergence = divergences.build(**divergence_cfg)
    return lambda sparse, dense, y: divergence(sparse, dense).mean()


def choose_scores(cfg: DictConfig, net: nn.Module, datamodule: Any, context: StageContext):
    """Scores (higher = keep) for score-based pruners, or a mask directly (synflow, ltr); on ``net``'s device.

    CTS writes its expected density after every search step to ``density_trajectory.json`` in the run
    directory.
    """
    method = cfg.method
    batches = epochs_of(datamodule, context.device)
    density = method.density
    if method.pruner == "cts":
        search = method.search
        result = concrete_search(
            net, batches, density, search_objective(method, cfg.divergence), search.epochs,
            lr=search.lr, tau=search.tau, slack=search.slack, smoothing=search.smoothing,
            loss_scale=search.loss_scale, lr_drop_at=search.lr_drop_at, lr_drop_factor=search.lr_drop_factor,
        )  # fmt: skip
        if context.run_dir is not None:
            (context.run_dir / "density_trajectory.json").write_text(json.dumps(result.expected_density))
        return [a.detach() for a in result.logits], None
    if method.pruner == "random":
        return saliency.random_scores(net, torch.Generator().manual_seed(cfg.seed)), None
    if method.pruner == "magnitude":
        return saliency.magnitude_scores(net), None
    if method.pruner in ("snip", "grasp"):
        sample = [batch for _, batch in zip(range(method.score_batches), batches(0), strict=False)]
        scorer = saliency.snip_scores if method.pruner == "snip" else saliency.grasp_scores
        return scorer(net, sample), None
    if method.pruner == "synflow":
        return None, saliency.synflow_mask(net, datamodule.input_shape, density, method.synflow_rounds)
    start = copy.deepcopy(net.state_dict())  # ltr
    mask = [torch.ones_like(w, dtype=torch.bool) for w in prunable_weights(net)]
    rounds = ltr_densities(sum(m.numel() for m in mask), density, method.ltr.prune_fraction)
    progress = StageProgress("ltr", len(rounds), unit="round")
    for done, current in enumerate(rounds, start=1):
        stage = f"ltr round {done}/{len(rounds)}"
        train_plain(net, batches, method.ltr.epochs_per_round, method.optimizer, mask, stage)
        mask = saliency.prune_by_magnitude(net, mask, current)
        net.load_state_dict(start)  # rewind
        apply_mask(net, mask)
        progress.step(done, {"density": current})
    return None, mask


def _network(cfg: DictConfig, datamodule: Any) -> Callable[[], nn.Module]:
    return lambda: build_network(cfg.model, datamodule)


def rewind_point(cfg: DictConfig, datamodule: Any, context: StageContext) -> StageOutput:
    """Stage ``rewind``: the initial network, trained densely for ``method.rewind_epochs`` (0: as drawn)."""
    net = build_network(cfg.model, datamodule).to(context.device)
    if cfg.method.rewind_epochs:
        train_plain(
            net, epochs_of(datamodule, context.device), cfg.method.rewind_epochs, cfg.method.optimizer
        )
    return {"state": cpu_state(net)}


def search(cfg: DictConfig, datamodule: Any, context: StageContext) -> StageOutput:
    """Stage ``search``: the pruner's scores or mask at the rewind point, and how long choosing took."""
    net = network_from_state(_network(cfg, datamodule), context.outputs["rewind"]["state"])
    net.to(context.device)
    started = time.perf_counter()
    scores, mask = choose_scores(cfg, net, datamodule, context)
    if context.device.type == "cuda":
        torch.cuda.synchronize(context.device)
    elapsed = time.perf_counter() - started
    return {"scores": _on_cpu(scores), "mask": _on_cpu(mask), "search_time_s": elapsed}


def _on_cpu(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
    return None if tensors is None else [t.detach().cpu() for t in tensors]


def stages(cfg: DictConfig, datamodule: Any) -> list[Stage]:
    """The rewind point, then the mask search (CTS), the saliency scores or the LTR rounds."""
    return [
        Stage("rewind", partial(rewind_point, cfg, datamodule)),
        Stage("search", partial(search, cfg, datamodule)),
    ]


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> SparseModule:
    """The sparse network at the rewind point with the searched mask (after any sanity check)."""
    method = cfg.method
    net = network_from_state(_network(cfg, datamodule), outputs["rewind"]["state"])
    scores, mask = outputs["search"]["scores"], outputs["search"]["mask"]
    if method.sanity == "invert":
        scores = [-s for s in scores]
    if scores is not None:
        mask = global_top_k(scores, method.density)
    if method.sanity == "shuffle":
        mask = shuffle_within_layers(mask, torch.Generator().manual_seed(cfg.seed))
    if method.sanity == "reinit":
        net = build_network(cfg.model, datamodule)  # fresh weights from the generator's current state
    apply_mask(net, mask)
    return SparseModule(
        net,
        mask,
        outputs["search"]["search_time_s"],
        num_classes=datamodule.num_classes,
        optimizer=dict(method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
    )
