"""Teacher recipes: what a kind of cached teacher is built from and what trains it.

A :class:`TeacherRecipe` says only *what* to train: ``build`` makes the set-up data module and the untrained
network of a teacher config, ``train`` wraps the network in the LightningModule that trains it and hands
that module to the fit-and-test service (:class:`~divergence_lab.methods.stages.FitAndTest`) the recipe was
made with. *How* a module is fitted and tested (the Lightning Trainer, the run's accelerator and precision,
the progress lines, a resumable checkpoint of every finished epoch) belongs to the run layer, which gives
the service to the stages as ``context.fit_and_test``; whether a teacher must be trained at all (its key,
the lock, the files) is the teacher cache's business (:mod:`divergence_lab.run.teacher_cache`).

:func:`classifier_recipe` is the teacher of the vision and tabular distillation methods: the network of
``teacher_cfg.model`` trained with cross-entropy
(:class:`~divergence_lab.methods.cross_entropy.CrossEntropyModule`); its name (:data:`CLASSIFIER`) is not
part of their cache keys. Every other recipe adds its name to the key (the causal LM teacher of
:mod:`divergence_lab.methods.lm_kd`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch import nn

from divergence_lab.data import instantiate_datamodule
from divergence_lab.methods.cross_entropy import CrossEntropyModule
from divergence_lab.methods.stages import FitAndTest
from divergence_lab.models import build_network

CLASSIFIER = "classifier"  # the classifier recipe's name (not in its teachers' cache keys)
CLASSIFIER_PROGRESS = {"loss": "train/loss", "val acc": "val/acc"}  # label -> metric on its progress lines


@dataclass(frozen=True)
class TeacherRecipe:
    """How a kind of teacher is built and trained.

    ``build(teacher_cfg, data_cfg) -> (set-up data module, untrained network)``;
    ``train(net, teacher_cfg, datamodule) -> test metrics`` (with ``test/acc`` when the teacher has an
    accuracy), trained through the fit-and-test service the recipe was made with. ``name`` is part of the
    teacher's cache key unless it is :data:`CLASSIFIER`.
    """

    name: str
    build: Callable[[DictConfig, DictConfig], tuple[Any, nn.Module]]
    train: Callable[[nn.Module, DictConfig, Any], dict[str, float]]


def build_classifier(teacher_cfg: DictConfig, data_cfg: DictConfig) -> tuple[Any, nn.Module]:
    """The set-up data module a classifier teacher trains on (for its own seed) and its untrained network."""
    datamodule = instantiate_datamodule(data_cfg, seed=teacher_cfg.seed)
    return datamodule, build_network(teacher_cfg.model, datamodule)


def classifier_recipe(fit_and_test: FitAndTest) -> TeacherRecipe:
    """A classifier teacher trained by ``fit_and_test``: the network with cross-entropy for
    ``teacher_cfg.max_epochs`` epochs and ``teacher_cfg.optimizer``, then tested (``test/acc`` ...); each
    epoch's progress line shows its loss and validation accuracy."""

    def train(net: nn.Module, teacher_cfg: DictConfig, datamodule: Any) -> dict[str, float]:
        module = CrossEntropyModule(
            net, datamodule.num_classes, dict(teacher_cfg.optimizer), teacher_cfg.max_epochs
        )
        return fit_and_test(module, datamodule, teacher_cfg.max_epochs, CLASSIFIER_PROGRESS)

    return TeacherRecipe(CLASSIFIER, build_classifier, train)
