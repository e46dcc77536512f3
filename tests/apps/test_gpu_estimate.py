"""scripts/gpu_estimate.py: the FLOPs it counts against counts by hand, its work model, its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_config

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _load_script():
    sys.path.insert(0, str(SCRIPTS))  # the script imports gpu_check, its neighbour
    try:
        spec = importlib.util.spec_from_file_location("gpu_estimate", SCRIPTS / "gpu_estimate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_estimate"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


gpu_estimate = _load_script()


def conv_flops(c_in: int, c_out: int, kernel: int, side_out: int) -> int:
    """2 × C_in·C_out·k²·H_out·W_out: one multiply and one add per weight and output pixel."""
    return 2 * c_in * c_out * kernel**2 * side_out**2


def resnet20_flops(classes: int, shortcut_kernel: int) -> int:
    """ResNet-20 on 32×32 images by hand: a 3×3 stem (3 -> 16), three stages of three basic blocks
    (16 @ 32², 32 @ 16², 64 @ 8²; two 3×3 convolutions each, the first of stages 2 and 3 with stride 2 and a
    ``shortcut_kernel`` projection), global pooling and a linear layer (64 -> classes)."""
    total = conv_flops(3, 16, 3, 32)
    c_in = 16
    for c_out, side in ((16, 32), (32, 16), (64, 8)):
        for block in range(3):
            total += conv_flops(c_in, c_out, 3, side) + conv_flops(c_out, c_out, 3, side)
            if block == 0 and c_in != c_out:
                total += conv_flops(c_in, c_out, shortcut_kernel, side)
            c_in = c_out
    return total + 2 * 64 * classes


def bert_flops(layers: int, hidden: int, intermediate: int, length: int, classes: int) -> int:
    """A BERT encoder by hand on ``length`` tokens: per layer the Q, K, V and output projections
    (4·L·d² multiply-adds), the feed-forward (2·L·d·d_ff) and attention's two products (2·L²·d); then the
    pooler (d² on the first token) and the classifier (d·classes)."""
    per_layer = 4 * length * hidden**2 + 2 * length * hidden * intermediate + 2 * length**2 * hidden
    return 2 * (layers * per_layer + hidden**2 + hidden * classes)


@pytest.mark.parametrize(("variant", "shortcut_kernel"), [("he", 1), ("tlab", 3)])
def test_resnet20_forward_flops_equal_the_count_by_hand(variant, shortcut_kernel):
    cfg = compose_config(["data=cifar100", "model=resnet_cifar", f"model.variant={variant}"])
    splits = gpu_estimate.cifar_splits(cfg.data)
    counted = gpu_estimate.flops_of(cfg, "model", splits)
    assert counted == pytest.approx(resnet20_flops(100, shortcut_kernel), rel=0.01)


def test_the_glue_presets_bert_stand_ins_equal_the_count_by_hand():
    cfg = compose_config(["experiment=sinkd_glue"])
    splits = gpu_estimate.glue_splits(cfg.data)
    assert splits.input_shape == (3, 128) and splits.num_classes == 2  # RTE, max_length 128
    teacher = gpu_estimate.flops_of(cfg, "method.teacher.model", splits)
    student = gpu_estimate.flops_of(cfg, "model", splits)
    assert teacher == pytest.approx(bert_flops(12, 768, 3072, 128, 2), rel=0.01)  # BERT-base
    assert student == pytest.approx(bert_flops(6, 768, 3072, 128, 2), rel=0.01)


def test_a_distillation_run_is_its_teacher_then_its_fit():
    """pld_cifar100 counted by hand from the FLOPs per example: ResNet-56 teacher, ResNet-20 student."""
    cfg = compose_config(["experiment=pld_cifar100"])
    splits = gpu_estimate.cifar_splits(cfg.data)
    teacher, student = (gpu_estimate.flops_of(cfg, key, splits) for key in ("method.teacher.model", "model"))
    train, val = splits.train, splits.val
    assert (train + val, splits.test) == (50_000, 10_000) and val == round(50_000 * cfg.data.val_fraction)
    t_epochs, epochs = cfg.method.teacher.max_epochs, cfg.trainer.max_epochs
    expected = (
        t_epochs * (train * 3 * teacher + val * teacher)
        + splits.test * teacher
        + epochs * (train * (3 * student + teacher) + val * student)
        + splits.test * (student + teacher)
    )
    phases = gpu_estimate.distillation(cfg, splits)
    assert sum(phase.flops for phase in phases) == pytest.approx(expected, rel=1e-9)
    steps = -(-train // cfg.method.teacher.batch_size) * t_epochs + -(-train // cfg.data.batch_size) * epochs
    assert sum(phase.steps for phase in phases) == steps


def test_times_follow_from_the_flops_the_kernels_and_the_stated_assumptions():
    launch_bound = gpu_estimate.Phase("fit", 2, 1000, 3.0e12, steps=50_000, kernels=400)
    compute_bound = gpu_estimate.Phase("teacher", 2, 1000, 3.0e15, steps=50, kernels=400)
    cost = gpu_estimate.Cost("p", "bf16-mixed", [launch_bound, compute_bound])
    assert cost.flops == 6.0e15 + 6.0e18
    peak = gpu_estimate.PEAK_TFLOPS["bf16-mixed"] * 1e12
    assert cost.seconds(0.1) == pytest.approx(cost.flops / (0.1 * peak))
    fraction, per_kernel = gpu_estimate.ESTIMATE_FRACTION, 10e-6
    expected = 50_000 * 400 * per_kernel + 6.0e18 / (fraction * peak)  # the slower side of each phase
    assert cost.estimated_seconds(per_kernel) == pytest.approx(expected)
    assert cost.fit_kernels == 400
    assert [gpu_estimate.duration(s) for s in (30, 600, 7200)] == ["<1 min", "10 min", "2.0 h"]


def test_the_table_has_one_row_per_gpu_preset():
    presets = gpu_estimate.gpu_presets()
    costs = [gpu_estimate.estimate(name) for name in presets]
    lines = gpu_estimate.format_markdown(costs).splitlines()
    assert lines[0].startswith("| preset | precision | training |") and lines[1].startswith("|---|")
    assert [line.split(" | ")[0].removeprefix("| ") for line in lines[2:]] == presets
    for cost in costs:
        if cost.preset in ("lm_kd_local", "rlvr_local"):
            assert not cost.phases and "yours" in cost.note
        else:
            assert cost.flops > 0 and cost.steps > 0 and cost.precision in gpu_estimate.PEAK_TFLOPS
    text = gpu_estimate.format_text(costs).splitlines()
    assert len(text) == len(presets) + 1


def test_every_phase_of_a_preset_is_counted_for_its_composed_lengths():
    """cts_resnet20_cifar10: the rewind, search and fit epochs are the composed config's."""
    cost = gpu_estimate.estimate("cts_resnet20_cifar10")
    cfg = compose_config(["experiment=cts_resnet20_cifar10"])
    trained = {phase.name: phase.epochs for phase in cost.phases if phase.steps}
    expected = {"rewind": cfg.method.rewind_epochs, "search": cfg.method.search.epochs}
    assert trained == {**expected, "fit": cfg.trainer.max_epochs}
    assert OmegaConf.select(cfg, "method.pruner") == "cts"


def test_the_kernels_of_a_step_are_the_operators_it_dispatches():
    """A linear layer's training step: addmm (or mm + add), then its backward (two matrix products, a sum
    for the bias); in eval mode without gradients only the forward; views launch nothing."""
    import torch

    net = torch.nn.Linear(4, 3)
    example = torch.zeros(2, 4)
    forward = gpu_estimate.kernels_per_step(net, example, trained=False)
    assert forward == 1  # addmm (the weight's transpose is a view)
    assert gpu_estimate.kernels_per_step(net, example, trained=True) > 3 * forward


def test_the_published_pace_follows_from_tlabs_ltr_timing_and_this_scripts_counts():
    """95.2 min for TLAB's LTR (ResNet-20, CIFAR-10, density 0.007): its rounds, epochs and batches, and the
    kernels of one ResNet-20 training step of cts_resnet20_cifar10, as the constants state them."""
    from divergence_lab.methods.pruning import ltr_densities
    from divergence_lab.pruning.masks import prunable_weights

    cfg = compose_config(["experiment=cts_resnet20_cifar10", "+cts_variant=ltr"])
    splits = gpu_estimate.cifar_splits(cfg.data)
    net = gpu_estimate.network(cfg, "model", splits)
    weights = prunable_weights(net)
    rounds = len(ltr_densities(sum(w.numel() for w in weights), 0.007, 0.2))
    batches = gpu_estimate.batches(splits.train, cfg.data.batch_size)
    assert rounds * cfg.method.ltr.epochs_per_round * batches == gpu_estimate.PUBLISHED_LTR_STEPS
    example = gpu_estimate.example_batch(splits)
    step = (
        gpu_estimate.kernels_per_step(net, example, trained=True)
        + gpu_estimate.OPTIMIZER_KERNELS
        + len(weights)
    )
    assert step == gpu_estimate.RESNET20_STEP_KERNELS
