"""Training a method needs before its main fit, declared as stages instead of hidden in its builder.

A method module may define, beside its builder ``build(cfg, datamodule, outputs)``::

    def stages(cfg, datamodule) -> list[Stage]

and name it in its YAML (``stages: divergence_lab.methods.<module>.stages``). Each :class:`Stage` has a name
and a function of a :class:`StageContext` that returns the stage's output: a dict of tensors, numbers,
strings and lists of them (what ``torch.load(weights_only=True)`` reads back). Stages run in order; a later
stage and the builder read earlier outputs from ``context.outputs[name]``. Examples: CTS's dense rewind
training, mask search and LTR rounds (:mod:`divergence_lab.methods.pruning`), LegoGCD's SimCLR pre-training
(:mod:`divergence_lab.methods.legogcd`), the cached teacher of distillation methods
(:mod:`divergence_lab.methods.kd`).

The run layer (:mod:`divergence_lab.run.stages`) runs them on the trainer's device and precision, saves each
output in ``<run dir>/stages/<name>.pt`` and loads it instead of running the stage again when a job resumes
or is requeued; under DDP rank 0 runs a stage and the other ranks load its output. Without a run directory
(a notebook, a test) :func:`run_in_memory` runs them here.

A stage function must move what it returns to the CPU (:func:`cpu_state`); it may use the global random
streams: the run layer restores them after a loaded stage as they were after the stage ran.

A stage that fits a LightningModule asks the run layer for it: ``context.fit_and_test`` (a
:class:`FitAndTest`) fits and tests a module with the run's trainer settings (accelerator, precision, one
progress line per epoch). A cached teacher is trained that way by its recipe
(:class:`divergence_lab.methods.recipes.TeacherRecipe`, which says what to train) through
``context.trained_teacher``; so the methods never import the run layer.

A stage that trains for several epochs keeps its progress through ``context.checkpoint(loop)`` (an
:class:`~divergence_lab.ground.progress.EpochCheckpoint`): it saves after every epoch what its loop needs
(networks, optimisers, schedulers, the epoch) and, in a run, the run layer adds the random streams and
writes it to ``<run dir>/stages/<stage>.partial/<loop>.pt``; an interrupted stage run again loads it and
continues with the next epoch, ending bit-identical to an uninterrupted run (CPU). The folder is removed
once the stage's output is saved. In memory (no run folder) the checkpoint keeps nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from hydra.utils import get_method
from torch import nn

from divergence_lab.ground.progress import NO_CHECKPOINT, EpochCheckpoint

if TYPE_CHECKING:
    from lightning import LightningModule

    from divergence_lab.methods.recipes import TeacherRecipe

StageOutput = dict[str, Any]


class FitAndTest(Protocol):
    """The run layer's training service: fit ``module`` on ``datamodule`` for ``max_epochs`` epochs in this
    process, test it, and return its test metrics by name. ``progress`` (label -> logged metric) is what each
    epoch's progress line shows. The run layer decides the rest: accelerator, precision, determinism, and
    inside the teacher cache a resumable checkpoint of every finished epoch."""

    def __call__(
        self, module: LightningModule, datamodule: Any, max_epochs: int, progress: Mapping[str, str]
    ) -> dict[str, float]: ...


def _no_fit_and_test(
    module: LightningModule, datamodule: Any, max_epochs: int, progress: Mapping[str, str]
) -> dict[str, float]:
    """The service of a context made without one: it refuses to train."""
    raise RuntimeError("this stage fits a module: give StageContext a fit_and_test service")


@dataclass(frozen=True)
class Stage:
    """One named piece of training (``name`` is also its file name and its progress label)."""

    name: str
    run: Callable[[StageContext], StageOutput]


@dataclass
class StageContext:
    """What a stage may use.

    ``device``: where to train (the trainer's root device); ``outputs``: earlier stages' outputs by name;
    ``run_dir``: the run directory for side files such as a search trajectory (None outside a run);
    ``teacher``: returns the trained, frozen teacher network of a teacher config, built and trained by an
    optional recipe (:class:`~divergence_lab.methods.recipes.TeacherRecipe`; the run layer's teacher cache;
    None where no provider was given); ``fit_and_test``: the run layer's training service
    (:class:`FitAndTest`, under the same trainer settings as the teacher provider; one that refuses where
    none was given); ``checkpoints``: returns the epoch checkpoint of a named loop of the stage that runs now
    (set by the run layer for each stage it runs; None: nothing is kept).
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    outputs: dict[str, StageOutput] = field(default_factory=dict)
    run_dir: Path | None = None
    teacher: Callable[..., nn.Module] | None = None
    fit_and_test: FitAndTest = _no_fit_and_test
    checkpoints: Callable[[str], EpochCheckpoint] | None = None

    def checkpoint(self, loop: str) -> EpochCheckpoint:
        """The per-epoch checkpoint of the loop named ``loop`` (``cts search``, ``simclr pretraining``) of the
        stage that runs now; one that keeps nothing outside a run."""
        return NO_CHECKPOINT if self.checkpoints is None else self.checkpoints(loop)

    def trained_teacher(self, teacher_cfg: Any, recipe: TeacherRecipe | None = None) -> nn.Module:
        """The trained, frozen teacher of ``teacher_cfg`` from the teacher provider (``recipe``: how to build
        and train it; the provider's default when None)."""
        if self.teacher is None:
            raise RuntimeError("this method needs a teacher: give StageContext a teacher provider")
        return self.teacher(teacher_cfg) if recipe is None else self.teacher(teacher_cfg, recipe)


def declared_stages(cfg: Any, datamodule: Any) -> list[Stage]:
    """The stages of the function ``stages(cfg, datamodule)`` that ``cfg.method.stages`` names, if any."""
    declared = cfg.method.get("stages")
    return list(get_method(declared)(cfg, datamodule)) if declared else []


def build_module(cfg: Any, datamodule: Any, outputs: dict[str, StageOutput]) -> Any:
    """The method's LightningModule: its builder ``cfg.method.builder(cfg, datamodule, outputs)``."""
    return get_method(cfg.method.builder)(cfg, datamodule, outputs)


def build_in_memory(cfg: Any, datamodule: Any, context: StageContext | None = None) -> Any:
    """A method's LightningModule without a run directory: its stages run here (nothing saved), then its
    builder."""
    return build_module(cfg, datamodule, run_in_memory(declared_stages(cfg, datamodule), context))


def run_in_memory(stages: Sequence[Stage], context: StageContext | None = None) -> dict[str, StageOutput]:
    """Run ``stages`` in order in this process, nothing saved; return their outputs by name."""
    context = context or StageContext()
    for stage in stages:
        context.outputs[stage.name] = stage.run(context)
    return context.outputs


def cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``net``'s state dict on the CPU (a stage output that does not alias the network)."""
    return {name: value.detach().to("cpu", copy=True) for name, value in net.state_dict().items()}


def network_from_state(build: Callable[[], nn.Module], state: dict[str, torch.Tensor]) -> nn.Module:
    """The network ``build()`` makes, with ``state`` loaded, built without touching the random streams.

    Building draws initial weights that ``state`` then replaces; drawing them from a forked generator keeps
    every later draw (the student's initialisation, dropout) the same whether a stage ran or was loaded.
    """
    with torch.random.fork_rng(devices=[]):
        net = build()
    net.load_state_dict(state)
    return net
