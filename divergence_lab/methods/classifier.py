"""The base every method shares: a network, its optimiser, and the common evaluation metrics.

The optimiser config is checked with the rest of the config (:func:`divergence_lab.config.checks.validate`).
Subclasses implement :meth:`ClassifierModule.losses`, returning named loss terms whose ``"loss"`` entry
is optimised; every term is logged as ``train/<name>`` (per step and per epoch:
:mod:`~divergence_lab.methods.training_terms`). Evaluation is the same for every method, so runs
compare directly: ``val/acc``, ``val/nll`` each epoch, and ``test/acc``, ``test/ece`` (15-bin L1
calibration error), ``test/nll`` at the end, with the test confusion matrix of the trained network
(:meth:`ClassifierModule.test_class_counts`: per-class accuracy, ``confusion.json``). A distillation method
names its teacher (:meth:`ClassifierModule.distilled_teacher`) and is also tested for how closely the
student follows it: ``test/agreement`` and ``test/kl_teacher_student``
(:mod:`divergence_lab.metrics.distillation`). With ``eval_every_steps`` the trained network is also
evaluated on the test split every that many optimiser steps, and the best of those accuracies is logged as
``test/optimistic_best_of_evals_acc`` (:mod:`divergence_lab.metrics.best_of_evals`: optimistic, for
comparison with papers that report it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.training_terms import TrainingTermsLogging
from divergence_lab.metrics.best_of_evals import BestOfEvaluations
from divergence_lab.metrics.classification import EvaluationMetrics
from divergence_lab.metrics.distillation import TeacherStudentMetrics

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
STEP_SCHEDULERS = ("linear",)  # stepped after every optimiser step, over the run's total number of steps


def make_optimizer(
    parameters: Any, optimizer: dict[str, Any], max_epochs: int, total_steps: int | None = None
) -> dict[str, Any] | torch.optim.Optimizer:
    """Build ``torch.optim`` objects from ``{name, lr, weight_decay, momentum?, scheduler?, ...}``.

    ``parameters`` may be a list of parameter-group dicts; the config gives the defaults of every group.
    ``no_decay_1d: true`` puts the tensors with at most one dimension (biases, normalisation scales) in a
    group without weight decay, as the official SimGCD / LegoGCD code does. Schedulers, stepped per epoch
    ``e`` (0-based) unless said otherwise:

    * ``cosine``: ``lr_e = η_min + (lr − η_min)(1 + cos(π e / max_epochs)) / 2`` with
      ``η_min = lr · min_lr_factor`` (default 0; SimGCD: 1e-3);
    * ``step``: ``lr_e = lr · gamma^(number of milestones <= e)``, ``e`` 0-based (TLAB on CIFAR: 79, 119);
    * ``linear``, stepped per optimiser step ``s`` (0-based) over ``S = total_steps``, with ``w =
      warmup_steps`` (default 0): ``lr_s = lr · s / w`` for ``s < w``, then ``lr · max(0, (S − s) / (S − w))``
      (Hugging Face's ``get_linear_schedule_with_warmup``: the rate is 0 after the last step);
    * ``none``: constant.
    """
    kwargs = {"lr": optimizer["lr"], "weight_decay": optimizer.get("weight_decay", 0.0)}
    if optimizer["name"] == "sgd":
        kwargs.update(momentum=optimizer.get("momentum", 0.9), nesterov=optimizer.get("nesterov", False))
    if optimizer.get("no_decay_1d", False):
        parameters = weight_decay_groups(parameters)
    opt = OPTIMIZERS[optimizer["name"]](parameters, **kwargs)
    kind = optimizer.get("scheduler", "none")
    if kind == "none":
        return opt
    if kind in STEP_SCHEDULERS:
        steps = _required_total_steps(total_steps)
        schedule = linear_schedule(steps, optimizer.get("warmup_steps", 0))
        linear = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": linear, "interval": "step"}}
    if kind == "cosine":
        eta_min = optimizer["lr"] * optimizer.get("min_lr_factor", 0.0)
        scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, max_epochs), eta_min=eta_min
        )
    else:
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=list(optimizer["milestones"]), gamma=optimizer.get("gamma", 0.1)
        )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def linear_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """The factor ``lr_s / lr`` of the ``linear`` schedule at optimiser step ``s`` (:func:`make_optimizer`);
    the denominators are at least 1, so ``w = 0`` or ``w >= S`` stay defined."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _required_total_steps(total_steps: int | None) -> int:
    """The run's number of optimiser steps, which a per-step schedule needs and only some methods give."""
    if total_steps is None:
        raise ConfigError(
            f"scheduler={STEP_SCHEDULERS[0]} needs the run's number of optimiser steps, which this method's "
            "optimiser does not take; use cosine, step or none"
        )
    return int(total_steps)


def total_optimizer_steps(module: L.LightningModule, optimizer: dict[str, Any]) -> int | None:
    """The run's optimiser steps as ``module``'s trainer counts them (epochs × batches per epoch / gradient
    accumulation, or ``max_steps``), asked for only where the schedule is per step (None otherwise)."""
    if optimizer.get("scheduler", "none") not in STEP_SCHEDULERS:
        return None
    return int(module.trainer.estimated_stepping_batches)


def weight_decay_groups(parameters: Any) -> list[dict[str, Any]]:
    """Two groups: tensors with two or more dimensions (decayed), and the rest with ``weight_decay = 0``."""
    tensors = list(parameters)
    decayed = [p for p in tensors if p.ndim > 1]
    return [{"params": decayed}, {"params": [p for p in tensors if p.ndim <= 1], "weight_decay": 0.0}]


class ClassifierModule(TrainingTermsLogging):
    """A trained network ``net`` with the shared metrics; ``losses`` defines the training objective.

    Every network returned by :meth:`evaluated_networks` is evaluated: the trained network under plain
    names (``val/acc``, ``test/acc``, ``test/ece``, ``test/nll``, ``test/brier``), others under their prefix
    (``test/teacher_acc`` ...). ``test_step`` returns ``{"probs": {prefix: probabilities}, "y": labels}``
    for callbacks such as the reliability diagram. The trained network's test predictions are also counted
    per class (:meth:`test_class_counts`), and compared with the teacher's when
    :meth:`distilled_teacher` names one (``test/agreement``, ``test/kl_teacher_student``). With
    ``eval_every_steps`` the trained network is evaluated on the test split every that many optimiser steps
    (:class:`~divergence_lab.metrics.best_of_evals.BestOfEvaluations`, attached by
    :meth:`configure_callbacks`; None: no such evaluation).
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: dict[str, Any],
        max_epochs: int,
        *,
        eval_every_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.optimizer_config = dict(optimizer)
        self.max_epochs = max_epochs
        self.num_classes = num_classes
        self.periodic_evaluation = None if eval_every_steps is None else BestOfEvaluations(eval_every_steps)
        self.val_acc = nn.ModuleDict()
        self.val_nll = nn.ModuleDict()
        self.test_metrics = nn.ModuleDict()
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.teacher_student = TeacherStudentMetrics(num_classes)

    def evaluated_networks(self) -> dict[str, nn.Module]:
        """Networks to evaluate, keyed by their metric prefix ("" for the trained network)."""
        return {"": self.net}

    def distilled_teacher(self) -> nn.Module | None:
        """The teacher the trained network learns from (None: the method has none)."""
        return None

    def test_class_counts(self) -> Tensor:
        """The trained network's confusion matrix over the last test, ``M[true, predicted]`` (``C × C``)."""
        return self.test_confusion.compute()

    def setup(self, stage: str) -> None:
        for prefix in self.evaluated_networks():
            key = prefix or "main"
            if key not in self.test_metrics:
                self.val_acc[key] = MulticlassAccuracy(self.num_classes, average="micro")
                self.val_nll[key] = MeanMetric()
                self.test_metrics[key] = EvaluationMetrics(self.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def losses(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Named loss terms for one batch; ``"loss"`` is the total that is minimised."""
        raise NotImplementedError

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(*batch)
        self.record_training_terms(terms, batch_size=len(batch[1]))
        return terms["loss"]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        for prefix, network in self.evaluated_networks().items():
            key = prefix or "main"
            logits = network(x).float()
            self.val_acc[key](logits, y)
            self.val_nll[key](F.cross_entropy(logits, y, reduction="none"))
            self.log(f"val/{prefix}acc", self.val_acc[key], prog_bar=not prefix)
            self.log(f"val/{prefix}nll", self.val_nll[key])

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()  # counted per test run, not over every test of this module

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        x, y = batch
        probs, logits = {}, {}
        for prefix, network in self.evaluated_networks().items():
            metrics = self.test_metrics[prefix or "main"]
            logits[prefix] = network(x).float()
            metrics.update(logits[prefix], y)
            for name, metric in metrics.named(f"test/{prefix}").items():
                self.log(name, metric)
            probs[prefix] = logits[prefix].softmax(-1)
        self.test_confusion.update(logits[""], y)
        if (teacher := self.distilled_teacher()) is not None:
            self.teacher_student.update(logits[""], self._logits_of(teacher, x, logits))
            for name, metric in self.teacher_student.named("test/").items():
                self.log(name, metric)
        return {"probs": probs, "y": y}

    def _logits_of(self, network: nn.Module, x: Tensor, computed: dict[str, Tensor]) -> Tensor:
        """``network``'s logits on ``x``: those computed under its prefix if it is evaluated, else new."""
        for prefix, evaluated in self.evaluated_networks().items():
            if evaluated is network:
                return computed[prefix]
        return network(x).float()

    def configure_optimizers(self):
        steps = total_optimizer_steps(self, self.optimizer_config)
        return make_optimizer(self.net.parameters(), self.optimizer_config, self.max_epochs, steps)

    def configure_callbacks(self) -> list[L.Callback]:
        """The periodic test evaluation of ``eval_every_steps`` (none when off). The same instance on every
        call: the test after fitting keeps the evaluations recorded while fitting."""
        return [] if self.periodic_evaluation is None else [self.periodic_evaluation]
