"""Estimate what a full run of each GPU preset costs on one H100 GPU, from the FLOPs of its training work.

For every GPU preset (``conf/experiment/*.yaml`` with ``override /trainer: gpu``) the full config is composed
and its work counted, stage by stage (cached teacher, rewind, CTS search, LTR rounds, SimCLR pre-training)
and for the main fit and its evaluations::

    FLOPs = Σ_phases  epochs × examples per epoch × FLOPs per example
    FLOPs per example = Σ_networks  k · F,   k = 3 for a trained network (forward + backward ≈ 2 × forward),
                                             k = 1 for a frozen one (a distillation teacher, evaluation)

where ``F`` is one network's forward FLOPs per example, counted by ``torch.utils.flop_counter`` on the CPU
on one example of the preset's input shape (convolutions, matrix products and attention; BERT at the
preset's ``data.max_length``, the length a batch is padded to at most). Examples per epoch come from the
public datasets' sizes (:data:`DATASET_EXAMPLES`) and the preset's splits. A BERT read from a local
folder is stood in for by the architecture built from a config (:func:`stand_in`: BERT-base teacher,
6-layer student); a preset whose models and data are the user's own (``lm_kd_local``) is listed without an
estimate.

Two bounds on the time, and an estimate from them, per phase:

* compute: ``FLOPs / (fraction × peak)``, with the H100's dense peak for the precision the preset resolves to
  there (:data:`PEAK_TFLOPS`); at :data:`BOUND_FRACTION` of the peak it is a lower bound (no faster);
* launches: ``steps × kernels per step × time per kernel``. Eager PyTorch dispatches one or more GPU
  kernels per operator from the CPU; the operators of one training step (forward, backward, optimiser,
  mask) are counted on the CPU with a dispatch counter (:func:`kernels_per_step`; view operators launch
  nothing and are not counted); each costs :data:`KERNEL_S` at a lean eager pace, or
  :data:`PUBLISHED_KERNEL_S`, the pace implied by the one published timing of this code path (TLAB's LTR
  in the CTS paper);
* the estimate: the larger of the launch time and the compute time at :data:`ESTIMATE_FRACTION` of the
  peak, phase by phase (the CPU queues kernels while the GPU runs earlier ones, so the slower side sets the
  pace).

The FLOPs and the kernel counts are counted; the peak fractions and the per-kernel cost are assumptions.
CIFAR ResNets at batch 64-512 come out launch-bound, BERT-base at 16 × 128 tokens compute-bound.
``make gpu-check`` measures the main fit's steps/s of each preset on the GPU at hand.

    python scripts/gpu_estimate.py               # an aligned text table
    python scripts/gpu_estimate.py --markdown    # the same table in Markdown (README, "GPU presets: cost")
    python scripts/gpu_estimate.py --also 'cts_resnet20_cifar10 +cts_variant=ltr'   # a row more
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpu_check import GLUE_MODELS, compose_experiment, gpu_presets

# H100 SXM dense tensor-core peaks in TFLOP/s (NVIDIA H100 datasheet, without sparsity), by the precision a
# preset resolves to there (trainer.precision: auto = bf16-mixed on a GPU with native bfloat16). 32-true:
# TF32, which cuDNN uses for convolutions by default; float32 matrix products (BERT, linear layers) run at
# 67 TFLOP/s unless torch.backends.cuda.matmul.allow_tf32 is set.
PEAK_TFLOPS = {"bf16-mixed": 989.4, "bf16-true": 989.4, "16-mixed": 989.4, "32-true": 494.7}
AUTO_PRECISION = "bf16-mixed"  # what trainer.precision: auto resolves to on an H100
# assumed sustained fractions of that peak: an optimistic one for the lower bound, a typical one for the
# estimate (small convolutions and short sequences keep the tensor cores far below their peak)
BOUND_FRACTION, ESTIMATE_FRACTION = 0.30, 0.10
# the time per dispatched operator of a launch-bound step, at two paces: a lean eager step (dispatcher,
# autograd bookkeeping and the CUDA launch, roughly 5-20 us each) ...
KERNEL_S = 10e-6
# ... and the pace of the one published timing of these presets' code path: TLAB's LTR on ResNet-20 /
# CIFAR-10 took 95.2 min (the CTS paper's abstract) for 23 rounds (0.8 per round down to 0.007) of epochs
# 9..159 (151) at 98 batches of 512: 340 354 steps of the 202 operators this script counts for a
# ResNet-20 training step, so 5 712 s / (340 354 x 202) = 83 us per operator (the authors' GPUs, AMP,
# their per-step logging included). tests/apps/test_gpu_estimate.py recomputes it from the script's counts.
PUBLISHED_LTR_S, PUBLISHED_LTR_STEPS, RESNET20_STEP_KERNELS = 95.2 * 60, 23 * 151 * 98, 202
PUBLISHED_KERNEL_S = PUBLISHED_LTR_S / (PUBLISHED_LTR_STEPS * RESNET20_STEP_KERNELS)
OPTIMIZER_KERNELS = 10  # a foreach SGD / AdamW step: a few multi-tensor kernels per parameter group
CONCRETE_SAMPLE_KERNELS = (
    6  # a CTS search step, per masked weight tensor: rand, clamp, two logs, sigmoid, mul
)
TRAINED, FROZEN = 3, 1  # forward-pass multiples: forward + backward, forward only
# a CTS search step: the dense network's forward, then the masked network's forward and backward
CTS_SEARCH = FROZEN + TRAINED
VIEWS = 2  # SimCLR and GCD train on two augmented views of each image
COUNTED_EXAMPLES = 2  # examples in the batch whose FLOPs are counted (a few: BatchNorm in eval mode)
SECONDS_PER_MINUTE, SECONDS_PER_HOUR = 60.0, 3600.0
MINUTES_SHOWN_UP_TO = 90  # longer times are shown in hours
TERA = 1e12
# (train, test) examples of the public datasets the presets read: CIFAR-10/100 (Krizhevsky 2009: 50 000
# training and 10 000 test images), GLUE tasks (train.tsv rows, dev.tsv rows: the test split here)
DATASET_EXAMPLES = {
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "sst2": (67_349, 872),
    "mrpc": (3_668, 408),
    "rte": (2_490, 277),
    "qnli": (104_743, 5_463),
    "wnli": (635, 71),
}
CIFAR_SHAPE = (3, 32, 32)
BERT_VOCABULARY, BERT_PAD_ID = 30_522, 0  # bert-base-uncased's WordPiece vocabulary and its [PAD] id
PRETRAINED_CLASSIFIER = "divergence_lab.models.text_classifier.PretrainedClassifier"
BERT_CLASSIFIER = "divergence_lab.models.text_classifier.BertClassifier"
USERS_OWN = "divergence_lab.models.causal_lm.causal_lm_from_path"


@dataclass(frozen=True)
class Phase:
    """``epochs`` × ``examples`` per epoch at ``flops_per_example``, in ``steps`` optimiser steps (0: an
    evaluation) of ``kernels`` dispatched operators each."""

    name: str
    epochs: int
    examples: int
    flops_per_example: float
    steps: int = 0
    kernels: int = 0

    @property
    def flops(self) -> float:
        return self.epochs * self.examples * self.flops_per_example

    def compute_seconds(self, fraction: float, peak_tflops: float) -> float:
        return self.flops / (fraction * peak_tflops * TERA)

    def launch_seconds(self, kernel_s: float) -> float:
        return self.steps * self.kernels * kernel_s


@dataclass
class Cost:
    """A preset's phases (empty, with a note, when it is not estimated)."""

    preset: str
    precision: str
    phases: list[Phase] = field(default_factory=list)
    note: str = ""

    @property
    def flops(self) -> float:
        return sum(phase.flops for phase in self.phases)

    @property
    def steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    def seconds(self, fraction: float) -> float:
        """``FLOPs / (fraction × peak)``."""
        return self.flops / (fraction * PEAK_TFLOPS[self.precision] * TERA)

    def estimated_seconds(self, kernel_s: float) -> float:
        """``Σ_phases max(steps × kernels × kernel_s, compute time at ESTIMATE_FRACTION of the peak)``."""
        peak = PEAK_TFLOPS[self.precision]
        return sum(
            max(p.launch_seconds(kernel_s), p.compute_seconds(ESTIMATE_FRACTION, peak)) for p in self.phases
        )

    @property
    def fit_kernels(self) -> int:
        """The dispatched operators of one step of the main fit."""
        return next((p.kernels for p in self.phases if p.name == "fit"), 0)

    def work(self) -> str:
        """The training phases and their epochs, e.g. ``teacher 240 ep + fit 250 ep``."""
        return " + ".join(f"{p.name} {p.epochs} ep" for p in self.phases if p.steps)


# ---------------------------------------------------------------------------------------------------------
# data: splits and the input the networks take
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Splits:
    """Examples per split, and what a network built for the data needs (a stand-in data module for
    :func:`divergence_lab.models.build_network`)."""

    train: int
    val: int
    test: int
    input_shape: tuple[int, ...]
    num_classes: int
    arguments: dict[str, int] = field(default_factory=dict)

    def network_arguments(self) -> dict[str, int]:
        return self.arguments


def held_out(total: int, fraction: float) -> tuple[int, int]:
    """``(train, val)``: ``round(fraction × total)`` examples held out of ``total`` for validation."""
    val = round(total * fraction)
    return total - val, val


def cifar_splits(data: Any) -> Splits:
    """CIFAR: ``data.val_fraction`` of the training images held out; test = the official test set."""
    from divergence_lab.data.cifar import LAYOUT

    total, test = DATASET_EXAMPLES[data.variant]
    train, val = held_out(total, data.val_fraction)
    return Splits(train, val, test, CIFAR_SHAPE, LAYOUT[data.variant].classes)


def gcd_splits(data: Any) -> Splits:
    """GCD on CIFAR: an epoch draws every training image once (balanced sampling draws as many); validation
    and test are both ``D_u``, the training images outside the labelled part of the known classes."""
    base = cifar_splits(data.base)
    labelled = round(base.train * data.num_known / base.num_classes * data.labelled_fraction)
    unlabelled = base.train - labelled
    return Splits(base.train, unlabelled, unlabelled, CIFAR_SHAPE, base.num_classes)


def glue_splits(data: Any) -> Splits:
    """GLUE: ``data.val_fraction`` of train.tsv held out; test = dev.tsv; token rows ``(3, max_length)``."""
    from divergence_lab.data.glue import task_named

    total, test = DATASET_EXAMPLES[data.task]
    train, val = held_out(total, data.val_fraction)
    shape = (3, int(data.max_length))
    arguments = {"vocab_size": BERT_VOCABULARY, "pad_token_id": BERT_PAD_ID}
    return Splits(train, val, test, shape, len(task_named(data.task).labels), arguments)


SPLITS: dict[str, Callable[[Any], Splits]] = {
    "CIFARDataModule": cifar_splits,
    "GCDDataModule": gcd_splits,
    "GlueDataModule": glue_splits,
}


# ---------------------------------------------------------------------------------------------------------
# networks and their FLOPs
# ---------------------------------------------------------------------------------------------------------


def forward_flops(net: Any, example: Any) -> float:
    """Forward FLOPs per example of ``net`` (eval mode, no gradients) on the batch ``example``, counted by
    ``FlopCounterMode``: 2 per multiply-add of convolutions and matrix products (attention included)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(example)
    return counter.get_total_flops() / len(example)


def example_batch(splits: Splits) -> Any:
    """``COUNTED_EXAMPLES`` inputs of the data's shape: images, or token rows with every token attended."""
    import torch

    if splits.arguments:  # token rows: ids, attention mask, segments
        batch = torch.ones(COUNTED_EXAMPLES, *splits.input_shape, dtype=torch.long)
        batch[:, 2] = 0
        return batch
    return torch.zeros(COUNTED_EXAMPLES, *splits.input_shape)


def stand_in(model_cfg: Any, key: str) -> Any:
    """The config a network is built from: a BERT read from a folder (``<key>.path``) becomes a BERT built
    from a config of the sizes ``make gpu-check`` writes for it (``gpu_check.GLUE_MODELS``: BERT-base for
    the teacher, 6 layers for the student)."""
    from omegaconf import OmegaConf
    from transformers import BertConfig

    if model_cfg._target_ != PRETRAINED_CLASSIFIER:
        return model_cfg
    bert = BertConfig(**GLUE_MODELS[f"{key}.path"])
    sizes = {
        "layers": bert.num_hidden_layers,
        "hidden": bert.hidden_size,
        "heads": bert.num_attention_heads,
        "intermediate": bert.intermediate_size,
    }
    return OmegaConf.create({"_target_": BERT_CLASSIFIER, **sizes})


def network(cfg: Any, key: str, splits: Splits) -> Any:
    """The network of the config at ``key`` (``model``, ``method.teacher.model``) for the data."""
    from omegaconf import OmegaConf

    from divergence_lab.models import build_network

    net = build_network(stand_in(OmegaConf.select(cfg, key), key), splits)
    if hasattr(net, "model") and hasattr(net.model, "set_attn_implementation"):
        net.model.set_attn_implementation("eager")  # the same FLOPs as fused attention, but counted
    return net


def flops_of(cfg: Any, key: str, splits: Splits) -> float:
    return forward_flops(network(cfg, key, splits), example_batch(splits))


def kernels_per_step(net: Any, example: Any, trained: bool) -> int:
    """The operators one step of ``net`` dispatches on ``example``: its forward in training mode and the
    backward of a scalar of its outputs (``trained``), or its forward in eval mode without gradients; each
    launches at least one kernel on a GPU. View operators (no kernel) are not counted."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.count += not func.is_view
            return func(*args, **(kwargs or {}))

    net.train(trained)
    with torch.set_grad_enabled(trained), Counter() as counter:
        outputs = net(example)
        if trained:
            tensors = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
            sum(t.float().sum() for t in tensors if isinstance(t, torch.Tensor)).backward()
    return counter.count


def kernels_of(cfg: Any, key: str, splits: Splits, trained: bool) -> int:
    return kernels_per_step(network(cfg, key, splits), example_batch(splits), trained)


# ---------------------------------------------------------------------------------------------------------
# the phases of each kind of method (by its builder)
# ---------------------------------------------------------------------------------------------------------


def batches(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


def fit_phases(
    cfg: Any, splits: Splits, trained: float, evaluated: float, tested: float, kernels: int, name: str = "fit"
) -> list[Phase]:
    """The main fit: ``trainer.max_epochs`` epochs of the training split at ``trained`` FLOPs per example and
    ``kernels`` operators per step, a validation pass per epoch at ``evaluated``, one test pass at
    ``tested``."""
    epochs = int(cfg.trainer.max_epochs)
    steps = batches(splits.train, cfg.data.batch_size) * epochs
    return [
        Phase(name, epochs, splits.train, trained, steps, kernels),
        Phase("validation", epochs, splits.val, evaluated),
        Phase("test", 1, splits.test, tested),
    ]


def cached_teacher_phases(cfg: Any, splits: Splits, teacher: float, kernels: int) -> list[Phase]:
    """The teacher cache's cross-entropy training (``method.teacher.max_epochs`` at its own batch size)."""
    epochs = int(cfg.method.teacher.max_epochs)
    steps = batches(splits.train, cfg.method.teacher.batch_size) * epochs
    return [
        Phase("teacher", epochs, splits.train, TRAINED * teacher, steps, kernels + OPTIMIZER_KERNELS),
        Phase("teacher validation", epochs, splits.val, FROZEN * teacher),
        Phase("teacher test", 1, splits.test, FROZEN * teacher),
    ]


def distillation(cfg: Any, splits: Splits) -> list[Phase]:
    """KD, PLD, SinKD: the cached teacher, then the student trained against the frozen teacher."""
    student, teacher = flops_of(cfg, "model", splits), flops_of(cfg, "method.teacher.model", splits)
    teacher_trained = kernels_of(cfg, "method.teacher.model", splits, trained=True)
    kernels = (
        kernels_of(cfg, "model", splits, trained=True)
        + kernels_of(cfg, "method.teacher.model", splits, trained=False)
        + OPTIMIZER_KERNELS
    )
    fit = fit_phases(cfg, splits, TRAINED * student + FROZEN * teacher, student, student + teacher, kernels)
    return [*cached_teacher_phases(cfg, splits, teacher, teacher_trained), *fit]


def co_training(cfg: Any, splits: Splits) -> list[Phase]:
    """BD-KD, DML: teacher and student trained together, both evaluated."""
    both = flops_of(cfg, "model", splits) + flops_of(cfg, "method.teacher.model", splits)
    kernels = sum(kernels_of(cfg, key, splits, trained=True) for key in ("model", "method.teacher.model"))
    return fit_phases(cfg, splits, TRAINED * both, both, both, kernels + OPTIMIZER_KERNELS)


def plain_training(cfg: Any, splits: Splits) -> list[Phase]:
    """Cross-entropy training of ``model``."""
    net = flops_of(cfg, "model", splits)
    kernels = kernels_of(cfg, "model", splits, trained=True) + OPTIMIZER_KERNELS
    return fit_phases(cfg, splits, TRAINED * net, net, net, kernels)


def pruning(cfg: Any, splits: Splits) -> list[Phase]:
    """Rewind training, the CTS search (dense forward + masked forward and backward) or the LTR rounds
    (each ``epochs_per_round`` of training), then the sparse fit (dense FLOPs: pruned weights are zeros)."""
    from divergence_lab.methods.pruning import ltr_densities
    from divergence_lab.pruning.masks import prunable_weights

    method = cfg.method
    net = network(cfg, "model", splits)
    example = example_batch(splits)
    flops = forward_flops(net, example)
    masked = len(prunable_weights(net))
    # a training step: the network's forward and backward, the optimiser, the mask re-applied per weight
    step = kernels_per_step(net, example, trained=True) + OPTIMIZER_KERNELS + masked
    # a search step: the dense forward, a Concrete sample per weight, the masked forward and backward, Adam
    search_step = (
        kernels_per_step(net, example, trained=False)
        + kernels_per_step(net, example, trained=True)
        + CONCRETE_SAMPLE_KERNELS * masked
        + OPTIMIZER_KERNELS
    )
    per_epoch = batches(splits.train, cfg.data.batch_size)
    rewind = method.rewind_epochs
    phases = [Phase("rewind", rewind, splits.train, TRAINED * flops, per_epoch * rewind, step)]
    if method.pruner == "cts":
        epochs = method.search.epochs
        phases.append(
            Phase("search", epochs, splits.train, CTS_SEARCH * flops, per_epoch * epochs, search_step)
        )
    if method.pruner == "ltr":
        weights = sum(w.numel() for w in prunable_weights(net))
        rounds = len(ltr_densities(weights, method.density, method.ltr.prune_fraction))
        epochs = rounds * method.ltr.epochs_per_round
        phases.append(Phase("ltr", epochs, splits.train, TRAINED * flops, per_epoch * epochs, step))
    return [*phases, *fit_phases(cfg, splits, TRAINED * flops, flops, flops, step)]


def category_discovery(cfg: Any, splits: Splits) -> list[Phase]:
    """LegoGCD / SimGCD: SimCLR pre-training of backbone and projector on two views, then GCD training on
    two views with the backbone frozen up to its last block (``frozen`` forward, ``3 × trained``)."""
    import torch

    from divergence_lab.methods.legogcd import gcd_network

    method = cfg.method
    net = gcd_network(cfg, splits)
    backbone = net.backbone
    example = example_batch(splits)
    whole = forward_flops(net, example)
    step = VIEWS * kernels_per_step(net, example, trained=True) + OPTIMIZER_KERNELS
    frozen = 0.0
    if method.backbone.train_last_block_only:
        last = list(backbone).index(net.last_block())
        frozen = forward_flops(torch.nn.Sequential(*list(backbone)[:last]), example)
    pretrain_steps = batches(splits.train, method.pretrain.batch_size) * method.pretrain.epochs
    steps = splits.train // cfg.data.batch_size * cfg.trainer.max_epochs  # incomplete last batches dropped
    epochs = int(cfg.trainer.max_epochs)
    return [
        Phase("simclr", method.pretrain.epochs, splits.train, VIEWS * TRAINED * whole, pretrain_steps, step),
        Phase("fit", epochs, splits.train, VIEWS * (frozen + TRAINED * (whole - frozen)), steps, step),
        Phase("validation", epochs, splits.val, whole),
        Phase("test", 1, splits.test, whole),
    ]


BUILDERS: dict[str, Callable[[Any, Splits], list[Phase]]] = {
    "divergence_lab.methods.kd.build": distillation,
    "divergence_lab.methods.pld.build": distillation,
    "divergence_lab.methods.sinkd.build": distillation,
    "divergence_lab.methods.bdkd.build": co_training,
    "divergence_lab.methods.cross_entropy.build": plain_training,
    "divergence_lab.methods.pruning.build": pruning,
    "divergence_lab.methods.legogcd.build": category_discovery,
}


def resolved_precision(cfg: Any) -> str:
    """``trainer.precision`` as it resolves on an H100 (``auto``: bf16-mixed)."""
    precision = str(cfg.trainer.precision)
    return AUTO_PRECISION if precision == "auto" else precision


def estimate(name: str, overrides: tuple[str, ...] = ()) -> Cost:
    """The phases of the full preset ``name`` (with ``overrides``), or a note saying why it has none."""
    cfg = compose_experiment(name, overrides)
    cost = Cost(" ".join((name, *overrides)), resolved_precision(cfg))
    data_kind = str(cfg.data._target_).rsplit(".", 1)[-1]
    if cfg.model._target_ == USERS_OWN:
        cost.note = "not estimated: the models and data are yours"
    elif data_kind not in SPLITS or cfg.method.builder not in BUILDERS:
        cost.note = f"not estimated: no work model for {data_kind} and {cfg.method.builder}"
    else:
        cost.phases = BUILDERS[cfg.method.builder](cfg, SPLITS[data_kind](cfg.data))
    return cost


# ---------------------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``<1 min``, ``N min`` up to :data:`MINUTES_SHOWN_UP_TO` minutes, else ``X.Y h``."""
    minutes = seconds / SECONDS_PER_MINUTE
    if minutes < 1:
        return "<1 min"
    if minutes <= MINUTES_SHOWN_UP_TO:
        return f"{minutes:.0f} min"
    return f"{seconds / SECONDS_PER_HOUR:.1f} h"


def header() -> list[str]:
    bound = f"no faster than (FLOPs at {BOUND_FRACTION:.0%} of peak)"
    lean = f"estimate at {KERNEL_S * 1e6:.0f} µs / kernel"
    published = f"at TLAB's pace ({PUBLISHED_KERNEL_S * 1e6:.0f} µs / kernel)"
    return [
        "preset",
        "precision",
        "training",
        "steps",
        "kernels / fit step",
        "TFLOPs",
        bound,
        lean,
        published,
    ]


def cells(cost: Cost) -> list[str]:
    if not cost.phases:
        return [cost.preset, cost.precision, cost.note, *("-" for _ in header()[3:])]
    numbers = [
        f"{cost.steps:,}",
        f"{cost.fit_kernels:,}",
        f"{cost.flops / TERA:,.0f}",
        duration(cost.seconds(BOUND_FRACTION)),
        duration(cost.estimated_seconds(KERNEL_S)),
        duration(cost.estimated_seconds(PUBLISHED_KERNEL_S)),
    ]
    return [cost.preset, cost.precision, cost.work(), *numbers]


def format_text(costs: list[Cost]) -> str:
    """An aligned table, numbers right-aligned."""
    rows = [header(), *(cells(cost) for cost in costs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = [
        "  ".join(
            c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in text)


def format_markdown(costs: list[Cost]) -> str:
    """A Markdown table with numeric columns right-aligned."""
    names = header()
    lines = [
        "| " + " | ".join(names) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(names))) + "|",
    ]
    lines += ["| " + " | ".join(cells(cost)) + " |" for cost in costs]
    return "\n".join(lines)


def assumptions() -> str:
    """One line naming the peaks the times assume."""
    peaks = ", ".join(f"{precision} {tflops:g}" for precision, tflops in PEAK_TFLOPS.items())
    return (
        f"FLOPs and kernels counted on the CPU; the peak fractions and the time per kernel are assumptions "
        f"(H100 dense peak TFLOP/s {peaks}); each estimate takes, phase by phase, the larger of the launch "
        f"time and the compute time at {ESTIMATE_FRACTION:.0%} of the peak"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print the table in Markdown")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="'PRESET OVERRIDE ...'",
        help="a further row: a GPU preset with overrides, e.g. 'cts_resnet20_cifar10 +cts_variant=ltr'",
    )
    args = parser.parse_args()
    known = gpu_presets()
    rows = [(name,) for name in known] + [tuple(also.split()) for also in args.also]
    if unknown := sorted({row[0] for row in rows} - set(known)):
        parser.error(f"not GPU presets: {', '.join(unknown)}; known: {', '.join(known)}")
    costs = [estimate(name, overrides) for name, *overrides in rows]
    print(format_markdown(costs) if args.markdown else format_text(costs))
    print(("\n" if args.markdown else "") + assumptions())
    return 0


if __name__ == "__main__":
    sys.exit(main())
