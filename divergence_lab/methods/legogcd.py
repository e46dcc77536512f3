"""LegoGCD (Cao et al., CVPR 2024) on top of SimGCD (Wen et al., ICCV 2023): generalized category discovery.

Network: a backbone (``mlp`` or ``resnet_cifar``; pretrained with SimCLR here, only its last block trained,
as DINO ViT-B/16 in the paper), a projector MLP for contrastive features (:func:`projector_mlp`; the official
DINOHead's is 768 -> 2048 -> 2048 -> 256), and a cosine prototype classifier ``s = <f/|f|, w_k/|w_k|>`` over
all K classes. With ``P = softmax(s/τ_s)`` (τ_s = 0.1) on both views (2B rows), the SimGCD loss is::

    L = (1-λ)(L_u_cls + ε(log K - H(mean P)) + L_u_rep) + λ(L_s_cls + L_s_rep),   λ = 0.35
    L_s_cls  = CE(s/τ_s, y) on labelled rows;  L_u_cls = cross-view CE(softmax(s'/τ_t) detached, P)
    L_u_rep  = InfoNCE between views (temperature 1);  L_s_rep = SupCon on labelled rows (temperature 0.07)

with τ_t warmed up linearly from 0.07 to 0.04 over the first 30 epochs. LegoGCD adds, each switchable:

* DKL (``use_dkl``): a dual-view term between the two views' predictions, nothing detached, inside the
  unsupervised classification term (so weighted by 1-λ); :func:`dual_view_kl`, ``method.dkl_form``:
  ``official_code`` (default) is the official ``DistillLoss.forward``, which applies ``log_softmax`` to the
  probabilities ``P1, P2`` a second time: ``mean_i Σ_k P1_ik (log softmax(P1_i)_k − log softmax(P2_i)_k)``;
  ``paper`` is Eq. 11–12 as printed, ``D(P1, P2)`` from the divergence registry (default ``kl`` = KL(P1‖P2));
* LER (``use_ler``): rows that are unlabelled, predicted as a known class (``argmax P < num_known``) with
  confidence ``max P >= δ`` get ``ℓ = -Σ_k π_k log softmax(s/τ_o + λ_o log q̂)_k`` with ``π = softmax(s/τ_o)``
  (τ_o = 0.05, λ_o = 0.4, not detached), averaged over all 2B rows and weighted by β = 2. ``q̂`` is a running
  class prior: ``q̂ ← m q̂ + (1-m) mean softmax(s)`` (m = 0.999, temperature 1), updated after each step.

Where paper and official code differ, this follows the code (papers.md §3): the τ_t schedule is linear,
the InfoNCE/SupCon temperatures are 1 and 0.07, and LER *minimises* ``ℓ`` (sharpening) although the paper
prints Eq. 9 with a leading minus, and DKL is the code's double-softmax term unless ``dkl_form: paper``.
Batches come from the official sampler that balances labelled and unlabelled images
(:class:`divergence_lab.data.gcd.GCDDataModule`); SGD with a cosine schedule down to lr·1e-3 and no weight
decay on tensors with one dimension (``method.optimizer``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, ListConfig
from torch import Tensor, nn

from divergence_lab import divergences
from divergence_lab.data.gcd import augment
from divergence_lab.data.protocol import CategoryDiscoveryData
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.progress import NO_CHECKPOINT, EpochCheckpoint, StageProgress, mean_of
from divergence_lab.methods.classifier import make_optimizer, total_optimizer_steps
from divergence_lab.methods.stages import Stage, StageContext, StageOutput, cpu_state, network_from_state
from divergence_lab.methods.training_terms import TrainingTermsLogging
from divergence_lab.metrics.gcd import cluster_accuracy

SIMCLR_LOOP = "simclr pretraining"  # the progress label and epoch-checkpoint name of the SimCLR loop
DKL_FORMS = ("official_code", "paper")  # the dual-view term: the official code's, or Eq. 11-12 as printed


class GCDNetwork(nn.Module):
    """Backbone -> (normalised projector features, cosine logits over ``num_classes`` prototypes).

    The projector is an MLP ``width -> h_1 -> ... -> h_n -> projection`` with GELU between its layers
    (:func:`projector_mlp`); ``projector_hidden = (h_1, ..., h_n)``, by default one layer as wide as the
    backbone's features (``(width,)``). The official DINOHead is ``(2048, 2048)`` into a 256-d bottleneck.
    """

    def __init__(
        self,
        backbone: nn.Sequential,
        width: int,
        projection: int,
        num_classes: int,
        projector_hidden: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = [width] if projector_hidden is None else list(projector_hidden)
        self.projector = projector_mlp(width, hidden, projection)
        self.prototypes = nn.Parameter(torch.randn(num_classes, width) / math.sqrt(width))

    def last_block(self) -> nn.Module:
        """The backbone's last block with parameters: the only part of it that GCD training updates."""
        return [m for m in self.backbone if any(True for _ in m.parameters())][-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        logits = F.normalize(features, dim=1) @ F.normalize(self.prototypes, dim=1).T
        return F.normalize(self.projector(features), dim=1), logits


def projector_mlp(width: int, hidden: Sequence[int], projection: int) -> nn.Sequential:
    """``Linear(width, h_1), GELU, ..., Linear(h_n, projection)``; no hidden width: one ``Linear``."""
    sizes = [width, *hidden, projection]
    layers: list[nn.Module] = []
    for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(size_in, size_out), nn.GELU()]
    return nn.Sequential(*layers[:-1])


def build_backbone(
    kind: str, input_shape: tuple[int, ...], hidden: list[int], depth: int
) -> tuple[nn.Sequential, int]:
    """``mlp`` (flatten, Linear+ReLU per ``hidden`` width) or ``resnet_cifar`` (its conv stages, pooled)."""
    if kind == "mlp":
        layers: list[nn.Module] = [nn.Flatten()]
        width = int(np.prod(input_shape))
        for size in hidden:
            layers.append(nn.Sequential(nn.Linear(width, size), nn.ReLU()))
            width = size
        return nn.Sequential(*layers), width
    if kind == "resnet_cifar":
        from divergence_lab.models.resnet_cifar import CifarResNet

        resnet = CifarResNet(input_shape, num_classes=1, depth=depth)
        width = resnet.head[-1].in_features
        return nn.Sequential(*resnet.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()), width
    raise ConfigError(f"method.backbone.kind must be mlp or resnet_cifar (got {kind!r})")


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 1.0) -> Tensor:
    """SimCLR loss between two views: each row's positive is its other view among the 2B - 1 others."""
    z = torch.cat([z1, z2])
    similarity = z @ z.T / temperature
    similarity = similarity.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = len(z1)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, positives)


def supcon(z: Tensor, y: Tensor, temperature: float = 0.07) -> Tensor:
    """Supervised contrastive loss (Khosla et al.): positives are the other rows with the same label."""
    similarity = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    log_prob = similarity.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    positives = (y[:, None] == y[None, :]) & ~self_mask
    counts = positives.sum(1)
    has_positive = counts > 0
    if not has_positive.any():
        return z.sum() * 0.0
    summed = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1)
    return -(summed[has_positive] / counts[has_positive]).mean()


def teacher_temperature(epoch: int, start: float = 0.07, end: float = 0.04, warmup: int = 30) -> float:
    """Linear warm-up of the self-distillation target temperature (the official code's schedule)."""
    return end if epoch >= warmup else start + (end - start) * epoch / max(warmup - 1, 1)


def cross_view_distillation(logits: Tensor, views: int, student_t: float, teacher_t: float) -> Tensor:
    """Mean CE between each view's sharpened, detached prediction and every *other* view's prediction."""
    targets = F.softmax(logits.detach() / teacher_t, dim=1).chunk(views)
    log_probs = F.log_softmax(logits / student_t, dim=1).chunk(views)
    terms = [-(targets[t] * log_probs[s]).sum(1).mean() for t in range(views) for s in range(views) if s != t]
    return torch.stack(terms).mean()


def mean_entropy_gap(probs: Tensor) -> Tensor:
    """``log K - H(mean_rows probs)``: zero when the batch uses every class equally."""
    mean = probs.mean(0)
    return math.log(probs.shape[1]) + (mean * torch.log(mean.clamp_min(1e-12))).sum()


def dual_view_kl(
    logits_view1: Tensor,
    logits_view2: Tensor,
    form: str,
    student_temperature: float = 0.1,
    divergence: divergences.Divergence | None = None,
) -> Tensor:
    """LegoGCD's dual-view constraint between the two views' cosine logits (rows paired), batch mean.

    With ``P_v = softmax(s_v / student_temperature)``:

    * ``official_code``: ``mean_i Σ_k P1_ik (log softmax(P1_i)_k − log softmax(P2_i)_k)``, the official
      ``DistillLoss.forward`` (``log_softmax`` applied to the probabilities, a softmax of a softmax);
    * ``paper``: ``mean_i D(P1_i ‖ P2_i)`` with ``divergence`` a registry member called as
      ``divergence(student=s2/τ, teacher=s1/τ)`` (default: ``kl``, so ``KL(P1 ‖ P2)``, Eq. 11–12).

    Nothing is detached: gradients reach both views.
    """
    first, second = logits_view1 / student_temperature, logits_view2 / student_temperature
    if form == "official_code":
        p1, p2 = F.softmax(first, dim=1), F.softmax(second, dim=1)
        return (p1 * (F.log_softmax(p1, dim=1) - F.log_softmax(p2, dim=1))).sum(1).mean()
    if form == "paper":
        member = (
            divergence
            if divergence is not None
            else divergences.build("kl", temperature=1.0, t_squared=False)
        )
        return member(second, first).mean()
    raise ConfigError(f"method.dkl_form must be one of {', '.join(DKL_FORMS)} (got {form!r})")


def ler_selection(probs: Tensor, labelled: Tensor, num_known: int, threshold: float) -> Tensor:
    """Rows that LER regularises: unlabelled, predicted as a known class, confidence >= threshold."""
    confidence, predicted = probs.max(dim=1)
    return ~labelled & (confidence >= threshold) & (predicted < num_known)


def ler_loss(logits: Tensor, selected: Tensor, prior: Tensor, tau: float, margin: float) -> Tensor:
    """Mean over all rows of ``selected * -Σ_k softmax(s/τ)_k log softmax(s/τ + margin·log prior)_k``."""
    target = F.softmax(logits / tau, dim=1)
    log_pred = F.log_softmax(logits / tau + margin * torch.log(prior), dim=1)
    per_row = -(target * log_pred).sum(1)
    return torch.where(selected, per_row, torch.zeros_like(per_row)).mean()


def pretrain_backbone(
    net: GCDNetwork,
    images: Tensor,
    augment_kind: str,
    pretrain: DictConfig,
    device: torch.device,
    checkpoint: EpochCheckpoint = NO_CHECKPOINT,
) -> None:
    """SimCLR on all training images (labels unused): a small stand-in for the paper's DINO backbone.

    Adam (``pretrain.lr``) on the backbone and projector, InfoNCE at ``pretrain.temperature`` between two
    augmented views of each image, ``pretrain.epochs`` epochs of ``pretrain.batch_size`` images. Logs one
    progress line per epoch with the epoch's mean InfoNCE loss. ``checkpoint`` keeps the network and Adam's
    state after every epoch; pre-training that finds one continues with the next epoch, as if it had never
    stopped.
    """
    net.to(device)
    optimizer = torch.optim.Adam(
        list(net.backbone.parameters()) + list(net.projector.parameters()), lr=pretrain.lr
    )
    first = 0
    if (resumed := checkpoint.load()) is not None:
        first, state = resumed
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
    progress = StageProgress(SIMCLR_LOOP, pretrain.epochs, start=first)
    if first:
        progress.resuming(first)
    for epoch in range(first, pretrain.epochs):
        losses = []
        for batch in torch.randperm(len(images)).split(pretrain.batch_size):
            if len(batch) < 2:
                continue
            x = images[batch].to(device)
            z1, _ = net(augment(x, augment_kind))
            z2, _ = net(augment(x, augment_kind))
            loss = info_nce(z1, z2, temperature=pretrain.temperature)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        checkpoint.save(epoch + 1, {"net": cpu_state(net), "optimizer": optimizer.state_dict()})
        progress.step(epoch + 1, {"infonce": mean_of(losses)})


class LegoGCDModule(TrainingTermsLogging):
    terms_step_values = False  # epoch means only, as train/<name>

    def __init__(
        self,
        net: GCDNetwork,
        num_known: int,
        optimizer: dict[str, Any],
        max_epochs: int,
        settings: dict[str, Any],
        dkl_divergence: Any,
    ) -> None:
        super().__init__()
        self.net = net
        self.num_known = num_known
        self.optimizer_cfg = optimizer
        self.max_epochs = max_epochs
        self.settings = settings
        self.dkl = dkl_divergence
        num_classes = net.prototypes.shape[0]
        self.register_buffer("prior", torch.full((num_classes,), 1.0 / num_classes))
        self.predictions: list[Tensor] = []
        self.targets: list[Tensor] = []
        self.curve: list[dict[str, float]] = []

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        view1, view2, y, labelled = batch
        z, logits = self.net(torch.cat([view1, view2]))
        y2, labelled2 = y.repeat(2), labelled.repeat(2)
        s = self.settings
        probs = F.softmax(logits / s["student_temperature"], dim=1)
        tau_t = teacher_temperature(self.current_epoch, *s["teacher_temperature"])
        unsup_cls = cross_view_distillation(logits, 2, s["student_temperature"], tau_t)
        unsup_cls = unsup_cls + s["memax_weight"] * mean_entropy_gap(probs)
        terms: dict[str, Tensor] = {}
        if s["use_dkl"]:
            view1, view2 = logits.chunk(2)
            terms["dkl"] = dual_view_kl(view1, view2, s["dkl_form"], s["student_temperature"], self.dkl)
            unsup_cls = unsup_cls + terms["dkl"]
        if labelled2.any():
            sup_cls = F.cross_entropy(logits[labelled2] / s["student_temperature"], y2[labelled2])
        else:  # a batch without labelled images (likely when few are labelled): no supervised term
            sup_cls = logits.sum() * 0.0
        z1, z2 = z.chunk(2)
        unsup_rep = info_nce(z1, z2, s["infonce_temperature"])
        sup_rep = supcon(z[labelled2], y2[labelled2], s["supcon_temperature"])
        lam = s["sup_weight"]
        loss = (1 - lam) * (unsup_cls + unsup_rep) + lam * (sup_cls + sup_rep)
        if s["use_ler"]:
            selected = ler_selection(probs.detach(), labelled2, self.num_known, s["ler_threshold"])
            terms["ler"] = ler_loss(logits, selected, self.prior, s["ler_tau"], s["ler_margin"])
            terms["ler_selected"] = selected.float().mean()
            loss = loss + s["ler_weight"] * terms["ler"]
        with torch.no_grad():  # the running class prior, after the loss (temperature 1, as the code)
            m = s["prior_momentum"]
            self.prior.mul_(m).add_((1 - m) * F.softmax(logits, dim=1).mean(0))
        terms = {"loss": loss, "sup_cls": sup_cls, "unsup_cls": unsup_cls, **terms}
        self.record_training_terms(terms, batch_size=len(y))
        return loss

    def _collect(self, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        _, logits = self.net(x)
        self.predictions.append(logits.argmax(1).cpu())
        self.targets.append(y.cpu())

    def _accuracies(self) -> dict[str, float]:
        accuracies = cluster_accuracy(
            torch.cat(self.targets).numpy(), torch.cat(self.predictions).numpy(), self.num_known
        )
        self.predictions, self.targets = [], []
        return accuracies

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        accuracies = self._accuracies()
        self.log("val/acc", accuracies["acc_all"])
        self.log("val/acc_old", accuracies["acc_old"])
        self.log("val/acc_new", accuracies["acc_new"])
        if not self.trainer.sanity_checking:
            self.curve.append({"epoch": self.current_epoch, **accuracies})

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        accuracies = self._accuracies()
        self.log("test/acc", accuracies["acc_all"])
        self.log("test/acc_old", accuracies["acc_old"])
        self.log("test/acc_new", accuracies["acc_new"])

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            write_curve(Path(self.trainer.default_root_dir), self.curve)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["gcd_curve"] = self.curve

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.curve = list(checkpoint.get("gcd_curve", []))

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        steps = total_optimizer_steps(self, self.optimizer_cfg)
        return make_optimizer(trainable, self.optimizer_cfg, self.max_epochs, steps)


def write_curve(run_dir: Path, curve: list[dict[str, float]]) -> None:
    """``gcd_curve.json`` and ``gcd_curve.png``: All / Old / New accuracy on D_u per epoch."""
    if not curve or not run_dir.is_dir():
        return
    (run_dir / "gcd_curve.json").write_text(json.dumps(curve, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    epochs = [row["epoch"] for row in curve]
    for key, color in (("acc_all", "black"), ("acc_old", "tab:blue"), ("acc_new", "tab:orange")):
        ax.plot(epochs, [row[key] for row in curve], color=color, label=key.removeprefix("acc_"))
    ax.set(xlabel="epoch", ylabel="clustering accuracy on D_u", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "gcd_curve.png", dpi=110)
    plt.close(fig)


def gcd_network(cfg: DictConfig, datamodule: CategoryDiscoveryData) -> GCDNetwork:
    """The untrained network of ``cfg.method.backbone`` (kind, hidden, depth, projector_hidden, projection)
    for the data's input shape and number of classes."""
    backbone_cfg = cfg.method.backbone
    projector_hidden = checked_projector_hidden(backbone_cfg.get("projector_hidden"))
    backbone, width = build_backbone(
        backbone_cfg.kind, datamodule.input_shape, list(backbone_cfg.hidden), backbone_cfg.depth
    )
    return GCDNetwork(backbone, width, backbone_cfg.projection, datamodule.num_classes, projector_hidden)


def checked_projector_hidden(value: Any) -> list[int] | None:
    """``method.backbone.projector_hidden``: null (one hidden layer as wide as the backbone's features) or
    a list of widths >= 1 (empty: a single linear layer); anything else is refused in one line."""
    if value is None:
        return None
    widths = list(value) if isinstance(value, (list, ListConfig)) else None
    if widths is None or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
        raise ConfigError(
            f"method.backbone.projector_hidden must be null or a list of widths >= 1 (got {value!r})"
        )
    return widths


def _category_discovery(datamodule: Any) -> CategoryDiscoveryData:
    if not isinstance(datamodule, CategoryDiscoveryData):
        raise ConfigError("method=legogcd needs a GCD data config (data=gcd_digits, data=gcd_cifar100)")
    return datamodule


def simclr(cfg: DictConfig, datamodule: Any, context: StageContext) -> StageOutput:
    """Stage ``simclr``: the network drawn and its backbone pretrained with SimCLR (``method.pretrain``); an
    interrupted pre-training continues after its last finished epoch (``context.checkpoint``)."""
    datamodule = _category_discovery(datamodule)
    net = gcd_network(cfg, datamodule)
    images = datamodule.train_inputs()
    checkpoint = context.checkpoint(SIMCLR_LOOP)
    pretrain_backbone(net, images, datamodule.augment_kind, cfg.method.pretrain, context.device, checkpoint)
    return {"state": cpu_state(net)}


def stages(cfg: DictConfig, datamodule: Any) -> list[Stage]:
    """SimCLR pre-training of the backbone (the stand-in for the paper's DINO weights)."""
    return [Stage("simclr", partial(simclr, cfg, datamodule))]


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> LegoGCDModule:
    """The pretrained network (all but its last backbone layer frozen) and the LegoGCD/SimGCD module."""
    method = cfg.method
    datamodule = _category_discovery(datamodule)
    net = network_from_state(lambda: gcd_network(cfg, datamodule), outputs["simclr"]["state"])
    trainable = net.last_block() if method.backbone.train_last_block_only else net.backbone
    net.backbone.requires_grad_(False)
    trainable.requires_grad_(True)
    dkl = divergences.build(**{**cfg.divergence, "t_squared": False, "temperature": 1.0})
    settings = {
        key: method[key]
        for key in (
            "use_dkl",
            "dkl_form",
            "use_ler",
            "sup_weight",
            "memax_weight",
            "student_temperature",
            "infonce_temperature",
            "supcon_temperature",
            "ler_threshold",
            "ler_tau",
            "ler_margin",
            "ler_weight",
            "prior_momentum",
        )
    }
    settings["teacher_temperature"] = tuple(method.teacher_temperature)
    return LegoGCDModule(
        net, datamodule.num_known, dict(method.optimizer), cfg.trainer.max_epochs, settings, dkl
    )
