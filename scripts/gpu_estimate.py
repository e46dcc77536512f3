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

Time = FLOPs / (fraction × peak), with the H100's dense peak for the precision the preset resolves to on it
(:data:`PEAK_TFLOPS`) and the fractions of :data:`SUSTAINED_FRACTIONS`; and, as a second bound, the
optimiser steps of every phase at an assumed floor per step (:data:`STEP_FLOOR_S`). Both are assumptions,
not measurements: CIFAR ResNets at batch 64-512 are bound by kernel launches, framework overhead and data
movement rather than FLOPs, so their steps at the floor are likely the better guess; BERT-base at
16 × 128 tokens is bound by FLOPs, nearer the middle fraction. ``make gpu-check`` measures the main fit's
steps/s of each preset on the GPU at hand.

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
# assumed sustained fractions of that peak, from optimistic to pessimistic (see the module docstring)
SUSTAINED_FRACTIONS = (0.30, 0.10, 0.03)
# an assumed floor per optimiser step of eager PyTorch and Lightning on a small network (kernel launches,
# hooks, logging), whatever its FLOPs; 1 / the steps/s that `make gpu-check` measures replaces it
STEP_FLOOR_S = 0.010
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
    evaluation)."""

    name: str
    epochs: int
    examples: int
    flops_per_example: float
    steps: int = 0

    @property
    def flops(self) -> float:
        return self.epochs * self.examples * self.flops_per_example


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

    def floor_seconds(self) -> float:
        """``steps × STEP_FLOOR_S``: the time the steps take at the assumed per-step floor."""
        return self.steps * STEP_FLOOR_S

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


# ---------------------------------------------------------------------------------------------------------
# the phases of each kind of method (by its builder)
# ---------------------------------------------------------------------------------------------------------


def batches(examples: int, batch_size: int) -> int:
    return math.ceil(examples / batch_size)


def fit_phases(
    cfg: Any, splits: Splits, trained: float, evaluated: float, tested: float, name: str = "fit"
) -> list[Phase]:
    """The main fit: ``trainer.max_epochs`` epochs of the training split at ``trained`` FLOPs per example,
    a validation pass per epoch at ``evaluated``, one test pass at ``tested``."""
    epochs = int(cfg.trainer.max_epochs)
    steps = batches(splits.train, cfg.data.batch_size) * epochs
    return [
        Phase(name, epochs, splits.train, trained, steps),
        Phase("validation", epochs, splits.val, evaluated),
        Phase("test", 1, splits.test, tested),
    ]


def cached_teacher_phases(cfg: Any, splits: Splits, teacher: float) -> list[Phase]:
    """The teacher cache's cross-entropy training (``method.teacher.max_epochs`` at its own batch size)."""
    epochs = int(cfg.method.teacher.max_epochs)
    steps = batches(splits.train, cfg.method.teacher.batch_size) * epochs
    return [
        Phase("teacher", epochs, splits.train, TRAINED * teacher, steps),
        Phase("teacher validation", epochs, splits.val, FROZEN * teacher),
        Phase("teacher test", 1, splits.test, FROZEN * teacher),
    ]


def distillation(cfg: Any, splits: Splits) -> list[Phase]:
    """KD, PLD, SinKD: the cached teacher, then the student trained against the frozen teacher."""
    student, teacher = flops_of(cfg, "model", splits), flops_of(cfg, "method.teacher.model", splits)
    fit = fit_phases(cfg, splits, TRAINED * student + FROZEN * teacher, student, student + teacher)
    return [*cached_teacher_phases(cfg, splits, teacher), *fit]


def co_training(cfg: Any, splits: Splits) -> list[Phase]:
    """BD-KD, DML: teacher and student trained together, both evaluated."""
    both = flops_of(cfg, "model", splits) + flops_of(cfg, "method.teacher.model", splits)
    return fit_phases(cfg, splits, TRAINED * both, both, both)


def plain_training(cfg: Any, splits: Splits) -> list[Phase]:
    """Cross-entropy training of ``model``."""
    net = flops_of(cfg, "model", splits)
    return fit_phases(cfg, splits, TRAINED * net, net, net)


def pruning(cfg: Any, splits: Splits) -> list[Phase]:
    """Rewind training, the CTS search (dense forward + masked forward and backward) or the LTR rounds
    (each ``epochs_per_round`` of training), then the sparse fit (dense FLOPs: pruned weights are zeros)."""
    from divergence_lab.methods.pruning import ltr_densities
    from divergence_lab.pruning.masks import prunable_weights

    method = cfg.method
    net = network(cfg, "model", splits)
    flops = forward_flops(net, example_batch(splits))
    per_epoch = batches(splits.train, cfg.data.batch_size)
    rewind = method.rewind_epochs
    phases = [Phase("rewind", rewind, splits.train, TRAINED * flops, per_epoch * rewind)]
    if method.pruner == "cts":
        epochs = method.search.epochs
        phases.append(Phase("search", epochs, splits.train, CTS_SEARCH * flops, per_epoch * epochs))
    if method.pruner == "ltr":
        weights = sum(w.numel() for w in prunable_weights(net))
        rounds = len(ltr_densities(weights, method.density, method.ltr.prune_fraction))
        epochs = rounds * method.ltr.epochs_per_round
        phases.append(Phase("ltr", epochs, splits.train, TRAINED * flops, per_epoch * epochs))
    return [*phases, *fit_phases(cfg, splits, TRAINED * flops, flops, flops)]


def category_discovery(cfg: Any, splits: Splits) -> list[Phase]:
    """LegoGCD / SimGCD: SimCLR pre-training of backbone and projector on two views, then GCD training on
    two views with the backbone frozen up to its last block (``frozen`` forward, ``3 × trained``)."""
    import torch

    from divergence_lab.methods.legogcd import GCDNetwork, build_backbone

    method = cfg.method
    backbone, width = build_backbone(
        method.backbone.kind, splits.input_shape, list(method.backbone.hidden), method.backbone.depth
    )
    net = GCDNetwork(backbone, width, method.backbone.projection, splits.num_classes)
    example = example_batch(splits)
    whole = forward_flops(net, example)
    frozen = 0.0
    if method.backbone.train_last_block_only:
        last = list(backbone).index(net.last_block())
        frozen = forward_flops(torch.nn.Sequential(*list(backbone)[:last]), example)
    pretrain_steps = batches(splits.train, method.pretrain.batch_size) * method.pretrain.epochs
    steps = splits.train // cfg.data.batch_size * cfg.trainer.max_epochs  # incomplete last batches dropped
    epochs = int(cfg.trainer.max_epochs)
    return [
        Phase("simclr", method.pretrain.epochs, splits.train, VIEWS * TRAINED * whole, pretrain_steps),
        Phase("fit", epochs, splits.train, VIEWS * (frozen + TRAINED * (whole - frozen)), steps),
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
    at_fractions = [f"at {fraction:.0%} of peak" for fraction in SUSTAINED_FRACTIONS]
    floor = f"at {STEP_FLOOR_S * 1000:g} ms/step"
    return ["preset", "precision", "training", "steps", "TFLOPs", *at_fractions, floor]


def cells(cost: Cost) -> list[str]:
    if not cost.phases:
        return [cost.preset, cost.precision, cost.note, *("-" for _ in header()[3:])]
    times = [duration(cost.seconds(fraction)) for fraction in SUSTAINED_FRACTIONS]
    numbers = [f"{cost.steps:,}", f"{cost.flops / TERA:,.0f}", *times, duration(cost.floor_seconds())]
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
        f"FLOPs counted on the CPU, times assumed, not measured: H100 dense peak TFLOP/s {peaks}; "
        f"the last column: the steps alone at {STEP_FLOOR_S * 1000:g} ms each"
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
