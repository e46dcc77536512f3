"""The GPU presets ``pld_cifar100`` and ``legogcd_cifar100`` against the official code's settings, composed
as ``dlab`` composes them; and the CPU presets they share files with, unchanged."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from divergence_lab import divergences
from divergence_lab.config.checks import validate_settings
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.classifier import make_optimizer
from divergence_lab.methods.legogcd import build_backbone, gcd_network
from divergence_lab.methods.pld import (
    PlackettLuceDistillation,
    TeacherReference,
    teacher_comparison,
    teacher_reference,
)
from divergence_lab.run.pipeline import trainer_arguments
from tests.conftest import compose_config, run_training

# mdistiller, configs/cifar100/dkd/res56_res20.yaml over mdistiller/engine/cfg.py's DKD defaults
MDISTILLER_RES56_RES20_DKD = {"CE_WEIGHT": 1.0, "ALPHA": 1.0, "BETA": 2.0, "T": 4.0, "WARMUP": 20}
MDISTILLER_DEFAULT_BETA = 8.0
CRD_RESNET56_CIFAR100_TOP1 = 0.7234  # HobbitLong/RepDistiller README, teacher row
# DINOHead(in_dim, out_dim, nlayers=3, hidden_dim=2048, bottleneck_dim=256), SimGCD / LegoGCD model.py
DINO_HEAD_HIDDEN, DINO_HEAD_BOTTLENECK, DINO_HEAD_LINEAR_LAYERS = 2048, 256, 3
RESNET20_FEATURES = 64


def _linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


# --- PLD: ResNet-56 -> ResNet-20 on CIFAR-100 -------------------------------------------------------------


def test_the_cifar100_dkd_variant_has_mdistillers_res56_res20_settings():
    cfg = compose_config(["experiment=pld_cifar100", "+pld_variant=dkd"])
    validate_settings(cfg)
    reference = MDISTILLER_RES56_RES20_DKD
    assert cfg.method.name == "kd" and cfg.divergence.name == "dkd"
    assert cfg.divergence.beta == reference["BETA"]
    assert cfg.divergence.alpha == reference["ALPHA"]
    assert cfg.divergence.temperature == reference["T"] and cfg.divergence.t_squared
    assert cfg.method.divergence_warmup.dkd == reference["WARMUP"]
    # CE : DKD = (1 - alpha) : alpha = CE_WEIGHT : 1
    assert (1 - cfg.method.alpha) / cfg.method.alpha == reference["CE_WEIGHT"]


def test_the_pair_setting_reaches_only_dkd_and_the_cpu_study_keeps_beta_8():
    study = compose_config(["study=pld_ranking", "+pld_variant=dkd"], with_hydra=True)
    assert study.divergence.beta == MDISTILLER_DEFAULT_BETA
    assert not any("resnet56_resnet20" in str(group) for group in study.hydra.runtime.choices)
    kd = compose_config(["experiment=pld_cifar100", "+pld_variant=kd"])
    assert kd.divergence.name == "kl" and "beta" not in kd.divergence
    override = compose_config(["experiment=pld_cifar100", "+pld_variant=dkd", "divergence.beta=5"])
    assert override.divergence.beta == 5  # the command line still wins


@pytest.mark.parametrize(("variant", "tau"), [("pld", 1.0), ("pld_t4", 4.0)])
def test_the_pld_variants_keep_their_temperature_in_the_cifar100_preset(variant, tau):
    cfg = compose_config(["experiment=pld_cifar100", f"+pld_variant={variant}"])
    assert cfg.method.ranking.temperature == tau


def test_ce_alone_on_cifar100_is_kd_with_alpha_zero():
    cfg = compose_config(["experiment=pld_cifar100", "+pld_variant=kd", "method.alpha=0"])
    validate_settings(cfg, ["method.alpha=0"])
    assert cfg.method.alpha == 0


@pytest.mark.parametrize(
    ("overrides", "weight_decay"), [([], 0.05), (["method.optimizer.weight_decay=0.5"], 0.5)]
)
def test_the_corrected_and_the_printed_weight_decay_are_one_override_apart(overrides, weight_decay):
    cfg = compose_config(["experiment=pld_cifar100", *overrides])
    validate_settings(cfg, overrides)
    assert cfg.method.optimizer.name == "adamw" and cfg.method.optimizer.weight_decay == weight_decay


def test_the_preset_declares_crds_resnet56_accuracy_outside_the_teacher_cache_key():
    cfg = compose_config(["experiment=pld_cifar100"])
    reference = teacher_reference(cfg.method.teacher_reference)
    assert reference.acc == CRD_RESNET56_CIFAR100_TOP1 and "RepDistiller" in reference.source
    assert "reference" not in cfg.method.teacher  # the teacher's key hashes method.teacher whole


def crd_teacher_lr(epoch_from_one: int) -> float:
    """CRD's ``adjust_learning_rate``: 0.05 · 0.1^(number of decay epochs 150, 180, 210 below the epoch)."""
    return 0.05 * 0.1 ** sum(epoch_from_one > decay for decay in (150, 180, 210))


def test_crds_teacher_schedule_is_three_overrides_away():
    overrides = [
        "method.teacher.optimizer.lr=0.05",
        "method.teacher.optimizer.scheduler=step",
        "+method.teacher.optimizer.milestones=[150,180,210]",
    ]
    cfg = compose_config(["experiment=pld_cifar100", *overrides])
    validate_settings(cfg, overrides)
    teacher = cfg.method.teacher
    built = make_optimizer([nn.Parameter(torch.zeros(1))], dict(teacher.optimizer), teacher.max_epochs)
    optimizer, scheduler = built["optimizer"], built["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(teacher.max_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradient: nothing moves, but the schedule is stepped in its order
        scheduler.step()
    expected = [crd_teacher_lr(epoch + 1) for epoch in range(teacher.max_epochs)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert optimizer.param_groups[0]["momentum"] == 0.9 and teacher.optimizer.weight_decay == 5e-4


@pytest.mark.parametrize(
    "value",
    [
        {"acc": 72.34, "source": "x"},
        {"acc": 0.7},
        {"acc": True, "source": "x"},
        {"acc": 0.7, "source": " "},
        0.7,
    ],
)
def test_a_malformed_teacher_reference_is_refused_in_one_line(value):
    with pytest.raises(ConfigError, match=r"^method\.teacher_reference must be \{acc") as refused:
        teacher_reference(value)
    assert "\n" not in str(refused.value)


def test_the_comparison_line_gives_both_accuracies_and_their_difference_in_points():
    line = teacher_comparison(0.7190, TeacherReference(0.7234, "CRD"))
    assert line == "teacher test acc 0.7190 against the reference 0.7234 (CRD): -0.44 pt"


def _pld_module(reference: TeacherReference | None) -> PlackettLuceDistillation:
    return PlackettLuceDistillation(
        net=nn.Linear(4, 3),
        teacher=nn.Linear(4, 3),
        divergence=divergences.build("pld"),
        alpha=1.0,
        num_classes=3,
        optimizer={"name": "adam", "lr": 1e-3},
        max_epochs=1,
        reference=reference,
    )


def test_only_a_declared_reference_makes_pld_test_its_teacher():
    assert list(_pld_module(None).evaluated_networks()) == [""]
    assert list(_pld_module(TeacherReference(0.5, "x")).evaluated_networks()) == ["", "teacher_"]


@pytest.mark.slow
def test_a_pld_run_with_a_reference_records_the_teachers_accuracy_beside_it(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="divergence_lab")
    overrides = [
        "experiment=pld_synthetic100",
        "data.num_classes=10",
        "data.samples_per_class=20",
        "trainer.max_epochs=1",
        "method.teacher.max_epochs=1",
        "+method.teacher_reference={acc: 0.5, source: a test}",
    ]
    record, run_dir = run_training(tmp_path, overrides)
    metrics = record["metrics"]
    (teacher,) = json.loads((run_dir / "teacher.json").read_text()).values()
    # the teacher cache tested it once when it was trained: the run's own test of it gives the same number
    assert metrics["test/teacher_acc"] == pytest.approx(teacher["test_metrics"]["test/acc"], abs=1e-6)
    assert metrics["test/teacher_acc_reference"] == 0.5
    expected = teacher_comparison(metrics["test/teacher_acc"], TeacherReference(0.5, "a test"))
    assert expected in [r.getMessage() for r in caplog.records]


# --- LegoGCD on CIFAR-100 -----------------------------------------------------------------------------------


def test_the_legogcd_cifar100_preset_trains_in_float32_as_the_official_runs():
    cfg = compose_config(["experiment=legogcd_cifar100"])
    validate_settings(cfg)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "32-true"
    assert trainer_arguments(cfg.trainer)["precision"] == "32-true"


def test_the_legogcd_cifar100_head_has_dino_heads_layer_sizes_on_resnet20_features():
    cfg = compose_config(["experiment=legogcd_cifar100"])
    net = gcd_network(cfg, SimpleNamespace(input_shape=(3, 32, 32), num_classes=100))
    shapes = _linear_shapes(net.projector)
    assert len(shapes) == DINO_HEAD_LINEAR_LAYERS
    assert shapes == [
        (RESNET20_FEATURES, DINO_HEAD_HIDDEN),
        (DINO_HEAD_HIDDEN, DINO_HEAD_HIDDEN),
        (DINO_HEAD_HIDDEN, DINO_HEAD_BOTTLENECK),
    ]
    assert [type(m) for m in net.projector] == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert tuple(net.prototypes.shape) == (100, RESNET20_FEATURES)
    assert _linear_shapes(net.backbone) == []  # the ResNet's own classifier is not part of the backbone


def test_the_digits_preset_head_is_unchanged_weight_for_weight():
    """Default ``projector_hidden`` (null): the network built before it existed, the same random draws."""
    cfg = compose_config(["experiment=legogcd_digits"])
    backbone_cfg, data = cfg.method.backbone, SimpleNamespace(input_shape=(1, 8, 8), num_classes=10)
    torch.manual_seed(0)
    net = gcd_network(cfg, data)
    torch.manual_seed(0)
    backbone, width = build_backbone("mlp", data.input_shape, list(backbone_cfg.hidden), backbone_cfg.depth)
    projector = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, backbone_cfg.projection))
    prototypes = torch.randn(data.num_classes, width) / width**0.5
    expected = {
        **{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
        **{f"projector.{k}": v for k, v in projector.state_dict().items()},
        "prototypes": prototypes,
    }
    state = net.state_dict()
    assert sorted(state) == sorted(expected)
    assert all(torch.equal(state[name], expected[name]) for name in expected)
    assert _linear_shapes(net.projector) == [(128, 128), (128, 64)]


@pytest.mark.parametrize("value", [[0], [64, -1], "wide", [2.5], [True]])
def test_a_bad_projector_width_is_refused_in_one_line(value):
    cfg = compose_config(
        ["experiment=legogcd_digits", f"method.backbone.projector_hidden={json.dumps(value)}"]
    )
    with pytest.raises(ConfigError, match=r"^method\.backbone\.projector_hidden must be null or a list"):
        gcd_network(cfg, SimpleNamespace(input_shape=(1, 8, 8), num_classes=10))


def test_an_empty_projector_hidden_list_is_one_linear_layer():
    cfg = compose_config(["experiment=legogcd_digits", "method.backbone.projector_hidden=[]"])
    net = gcd_network(cfg, SimpleNamespace(input_shape=(1, 8, 8), num_classes=10))
    assert _linear_shapes(net.projector) == [(128, 64)]
