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

One training recipe, one schedule (as TLAB, the CTS authors' code, does it): the rewind, every LTR round and
the sparse training use ``method.optimizer`` (weight decay included, built by
:func:`~divergence_lab.methods.classifier.make_optimizer`), ``trainer.gradient_clip_val`` and a learning
rate schedule over the epochs of the whole run, counted from the start of the rewind training:
``R = rewind_epochs`` epochs of rewind (epochs ``0 … R−1``), then ``trainer.max_epochs`` epochs of sparse
training (epochs ``R … R + max_epochs − 1``; ``T_max = R + max_epochs`` for ``cosine``). The sparse training
resumes the schedule at epoch ``R`` with a fresh optimiser: its ``k``-th epoch gets the rate of epoch
``R + k``; for ``step``, ``lr · gamma^#{milestones <= R + k}`` — the same as milestones shifted by ``−R``
with the ones already passed (``<= R``) folded into the starting rate. Each LTR round trains epochs
``R … R + epochs_per_round − 1`` from the rewind point, also with a fresh optimiser. The rewind and the LTR
rounds train on batches augmented as the main training's are (the data module's
``augment_training_batch``); the CTS search and the saliency scores see the stored images. The training
loss is the cross-entropy averaged over the batch, or summed (``method.loss_reduction: sum``, TLAB's).
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from divergence_lab import divergences
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.progress import NO_CHECKPOINT, EpochCheckpoint, StageProgress, mean_of
from divergence_lab.methods.classifier import make_optimizer
from divergence_lab.methods.cross_entropy import CrossEntropyModule
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

MASK_PRUNERS = ("synflow", "ltr")  # they choose a mask, not scores: there is nothing to invert


def check_settings(method: DictConfig) -> None:
    """The rule across pruning's keys that its YAML cannot declare (the pre-flight calls it): the sanity
    check ``invert`` keeps the lowest scores, so it needs a pruner that scores weights."""
    if method.sanity == "invert" and method.pruner in MASK_PRUNERS:
        raise ConfigError(f"method.sanity=invert needs a score-based pruner, not {method.pruner}")


class SparseModule(CrossEntropyModule):
    """Cross-entropy training of a network whose pruned weights are re-zeroed after every step.

    The learning rate schedule resumes at ``start_epoch`` (the rewind epoch): see the module docstring.
    """

    def __init__(
        self, net: nn.Module, mask: Mask, search_time_s: float, start_epoch: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(net, **kwargs)
        for index, keep in enumerate(mask):
            self.register_buffer(f"mask_{index}", keep)
        self.search_time_s = search_time_s
        self.start_epoch = start_epoch

    @property
    def mask(self) -> Mask:
        return [getattr(self, f"mask_{i}") for i in range(len(prunable_weights(self.net)))]

    def configure_optimizers(self) -> Any:
        optimizer, scheduler = scheduled_optimizer(
            self.net.parameters(), self.optimizer_config, self.start_epoch + self.max_epochs, self.start_epoch
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        apply_mask(self.net, self.mask)
        super().on_train_batch_end(outputs, batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        weights = prunable_weights(self.net)
        nonzero = sum(int((w != 0).sum()) for w in weights)
        self.log("test/density", nonzero / sum(w.numel() for w in weights))
        self.log("test/search_time_s", self.search_time_s)


def scheduled_optimizer(
    parameters: Any, optimizer_cfg: Any, schedule_epochs: int, start_epoch: int
) -> tuple[torch.optim.Optimizer, Any]:
    """``make_optimizer``'s optimiser and per-epoch scheduler (None: constant rate) for a schedule of
    ``schedule_epochs`` epochs, advanced to ``start_epoch``: the first epoch trained gets the rate the
    schedule gives epoch ``start_epoch`` (0-based), and every ``scheduler.step()`` moves one epoch on."""
    built = make_optimizer(parameters, dict(optimizer_cfg), schedule_epochs)
    if not isinstance(built, dict):
        return built, None
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    with warnings.catch_warnings():  # stepping the schedule, not the optimiser, is the point here
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
        for _ in range(start_epoch):
            scheduler.step()
    return optimizer, scheduler


def schedule_epochs(cfg: DictConfig) -> int:
    """The epochs of the whole run's schedule: the rewind's, then the sparse training's."""
    return cfg.method.rewind_epochs + cfg.trainer.max_epochs


def epochs_of(datamodule: Any, device: torch.device, augment: bool) -> Callable[[int], Iterator[Any]]:
    """``batches(epoch)`` over the training loader on ``device``, in the data module's (seed, epoch) order;
    with ``augment``, each batch as training sees it (the data module's ``augment_training_batch``: CIFAR's
    crop and flip), else as stored (the search and the saliency scores: TLAB feeds its search the
    evaluation transforms)."""
    loader = datamodule.train_dataloader()
    prepare = datamodule.augment_training_batch if augment else (lambda batch: batch)

    def batches(epoch: int) -> Any:
        loader.sampler.set_epoch(epoch)
        return (prepare((x.to(device), y.to(device))) for x, y in loader)

    return batches


def train_plain(
    net: nn.Module,
    batches: Any,
    optimizer_cfg: DictConfig,
    epochs: range,
    total_epochs: int,
    clip: float | None = None,
    clip_algorithm: str = "norm",
    loss_reduction: str = "mean",
    mask: Mask | None = None,
    stage: str = "rewind",
    checkpoint: EpochCheckpoint = NO_CHECKPOINT,
) -> None:
    """Cross-entropy training of ``net`` for the run epochs ``epochs`` (rewind pre-training, LTR rounds) with
    the main training's recipe, re-applying ``mask`` after every step.

    ``method.optimizer`` as the sparse training builds it (momentum, weight decay), its schedule over
    ``total_epochs`` stepped once per epoch so epoch ``e`` trains at the rate the schedule gives epoch ``e``
    (:func:`scheduled_optimizer`), gradients clipped as Lightning does with ``trainer.gradient_clip_val``
    (``clip``; None or 0: no clipping) and ``gradient_clip_algorithm`` (``clip_algorithm``: ``norm`` or
    ``value``), the cross-entropy averaged or summed over the batch (``loss_reduction``). Batches in the
    data module's order for each run epoch. Logs one progress line per epoch, named ``stage``, with the
    epoch's mean training loss (per example).

    ``checkpoint`` keeps the network and the optimiser after every epoch; training that finds one continues
    with the next epoch of ``epochs`` (its schedule advanced to it), as if it had never stopped.
    """
    first = 0
    resumed = checkpoint.load()
    if resumed is not None:
        first, state = resumed
        net.load_state_dict(state["net"])
    # a resumed schedule is advanced to its epoch, then the optimiser's saved state (rates included) loaded
    optimizer, scheduler = scheduled_optimizer(
        net.parameters(), optimizer_cfg, total_epochs, epochs.start + first
    )
    if resumed is not None:
        optimizer.load_state_dict(resumed[1]["optimizer"])
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    net.train()
    progress = StageProgress(stage, len(epochs), start=first)
    if first:
        progress.resuming(first)
    for done, epoch in enumerate(epochs[first:], start=first + 1):
        losses = []
        for x, y in batches(epoch):
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y, reduction=loss_reduction)
            loss.backward()
            losses.append(loss.detach() if loss_reduction == "mean" else loss.detach() / y.shape[0])
            if clip and clip_algorithm == "value":
                nn.utils.clip_grad_value_(parameters, clip)
            elif clip:
                nn.utils.clip_grad_norm_(parameters, clip)
            optimizer.step()
            if mask is not None:
                apply_mask(net, mask)
        if scheduler is not None:
            scheduler.step()
        checkpoint.save(done, {"net": cpu_state(net), "optimizer": optimizer.state_dict()})
        progress.step(done, {"loss": mean_of(losses)})


class _RoundCheckpoint:
    """The epoch checkpoint of one LTR round's training, kept inside the checkpoint of the LTR loop: the
    round, its mask and the round's training state, so the loop continues inside a round."""

    def __init__(
        self,
        loop: EpochCheckpoint,
        round_index: int,
        mask: Mask,
        epochs_per_round: int,
        resumed: tuple[int, dict[str, Any]] | None,
    ) -> None:
        self.loop, self.round_index, self.epochs_per_round = loop, round_index, epochs_per_round
        self.mask = [keep.detach().cpu() for keep in mask]
        self.resumed = resumed  # what the loop's checkpoint held for this round, already loaded

    def load(self) -> tuple[int, dict[str, Any]] | None:
        return self.resumed

    def save(self, epoch: int, state: dict[str, Any]) -> None:
        self.loop.save(
            self.round_index * self.epochs_per_round + epoch,
            {"round": self.round_index, "mask": self.mask, "epoch": epoch, "training": state},
        )


def train_like_the_run(cfg: DictConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`train_plain` that the run's config fixes."""
    return {
        "optimizer_cfg": cfg.method.optimizer,
        "total_epochs": schedule_epochs(cfg),
        "clip": cfg.trainer.get("gradient_clip_val"),
        "clip_algorithm": cfg.trainer.get("gradient_clip_algorithm") or "norm",
        "loss_reduction": cfg.method.get("loss_reduction", "mean"),
    }


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
    batches = epochs_of(datamodule, context.device, augment=False)
    density = method.density
    if method.pruner == "cts":
        search = method.search
        result = concrete_search(
            net, batches, density, search_objective(method, cfg.divergence), search.epochs,
            lr=search.lr, tau=search.tau, slack=search.slack, smoothing=search.smoothing,
            loss_scale=search.loss_scale, lr_drop_at=search.lr_drop_at, lr_drop_factor=search.lr_drop_factor,
            checkpoint=context.checkpoint("cts search"),
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
    training_batches = epochs_of(datamodule, context.device, augment=True)
    return None, ltr_mask(cfg, net, training_batches, context.checkpoint("ltr"))


def ltr_mask(cfg: DictConfig, net: nn.Module, batches: Any, checkpoint: EpochCheckpoint) -> Mask:
    """Iterative magnitude pruning with rewinding from ``net`` (the rewind point): each round trains
    ``method.ltr.epochs_per_round`` epochs, keeps the round's density by magnitude and rewinds.

    ``checkpoint`` keeps the loop's progress after every epoch of a round and after every round (the
    round, its mask, its training state); a loop that finds one continues where it stopped.
    """
    method = cfg.method
    device = next(net.parameters()).device
    start = copy.deepcopy(net.state_dict())
    mask = [torch.ones_like(w, dtype=torch.bool) for w in prunable_weights(net)]
    rounds = ltr_densities(sum(m.numel() for m in mask), method.density, method.ltr.prune_fraction)
    per_round = method.ltr.epochs_per_round
    epochs = range(method.rewind_epochs, method.rewind_epochs + per_round)
    first_round = 0
    inside: tuple[int, dict[str, Any]] | None = None  # where the checkpoint stopped inside its round
    if (resumed := checkpoint.load()) is not None:
        _, state = resumed
        first_round, mask = state["round"], [keep.to(device) for keep in state["mask"]]
        apply_mask(net, mask)  # the rewound network of the round (its training, if any, is loaded below)
        if state["training"] is not None:
            inside = (state["epoch"], state["training"])
    progress = StageProgress("ltr", len(rounds), unit="round", start=first_round)
    if resumed is not None:
        progress.resuming(first_round)
    for done, current in enumerate(rounds[first_round:], start=first_round + 1):
        stage = f"ltr round {done}/{len(rounds)}"
        in_round = _RoundCheckpoint(checkpoint, done - 1, mask, per_round, inside)
        inside = None
        recipe = train_like_the_run(cfg)
        train_plain(net, batches, epochs=epochs, mask=mask, stage=stage, checkpoint=in_round, **recipe)
        mask = saliency.prune_by_magnitude(net, mask, current)
        net.load_state_dict(start)  # rewind
        apply_mask(net, mask)
        state = {"round": done, "mask": [keep.detach().cpu() for keep in mask], "epoch": 0, "training": None}
        checkpoint.save(done * per_round, state)
        progress.step(done, {"density": current})
    return mask


def _network(cfg: DictConfig, datamodule: Any) -> Callable[[], nn.Module]:
    return lambda: build_network(cfg.model, datamodule)


def rewind_point(cfg: DictConfig, datamodule: Any, context: StageContext) -> StageOutput:
    """Stage ``rewind``: the initial network, trained densely for ``method.rewind_epochs`` (0: as drawn), with
    the sparse training's recipe and the first ``rewind_epochs`` epochs of the run's schedule; an
    interrupted rewind training continues after its last finished epoch (``context.checkpoint``)."""
    net = build_network(cfg.model, datamodule).to(context.device)
    if cfg.method.rewind_epochs:
        batches = epochs_of(datamodule, context.device, augment=True)
        epochs = range(cfg.method.rewind_epochs)
        checkpoint = context.checkpoint("rewind")
        train_plain(net, batches, epochs=epochs, checkpoint=checkpoint, **train_like_the_run(cfg))
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
    """The sparse network at the rewind point with the searched mask (after any sanity check), trained for
    ``trainer.max_epochs`` epochs from the rewind epoch of the run's schedule (module docstring)."""
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
        start_epoch=method.rewind_epochs,
        num_classes=datamodule.num_classes,
        optimizer=dict(method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
        loss_reduction=method.get("loss_reduction", "mean"),
    )
