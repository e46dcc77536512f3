"""PLD and SinKD as methods: their objectives, their configuration errors, and short real runs."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from divergence_lab import divergences
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.cifar import write_cifar
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.pld import PlackettLuceDistillation
from divergence_lab.methods.sinkd import SinkhornDistillation
from divergence_lab.methods.stages import StageContext, build_in_memory
from divergence_lab.models import build_network
from divergence_lab.models.mlp import MLP
from tests.conftest import compose_config, run_training

OPTIMIZER = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"}


def _nets():
    torch.manual_seed(0)
    return MLP([6], 5, hidden=[8]), MLP([6], 5, hidden=[16])


def test_pld_method_minimises_only_the_ranking_loss():
    student, teacher = _nets()
    module = PlackettLuceDistillation(student, teacher, divergences.build("pld"), 1.0, 5, OPTIMIZER, 3)
    x, y = torch.randn(10, 6), torch.randint(0, 5, (10,))
    terms = module.losses(x, y)
    expected = divergences.build("pld")(student(x), teacher(x), labels=y).mean()
    torch.testing.assert_close(terms["loss"], expected)
    onehot = PlackettLuceDistillation(
        student, teacher, divergences.build("pld", weights="onehot"), 1.0, 5, OPTIMIZER, 3
    )
    torch.testing.assert_close(onehot.losses(x, y)["loss"], F.cross_entropy(student(x), y))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_sinkd_adds_the_weighted_batch_transport_to_kd(reduction):
    student, teacher = _nets()
    transport = divergences.build("sinkhorn_batch")
    module = SinkhornDistillation(
        student,
        teacher,
        divergences.build("kl", temperature=4.0),
        0.9,
        5,
        OPTIMIZER,
        3,
        batch_transport=transport,
        transport_weight=0.5,
        transport_reduction=reduction,
    )
    x, y = torch.randn(10, 6), torch.randint(0, 5, (10,))
    s, t = student(x), teacher(x)
    rows = transport(s, t)
    term = rows.sum() if reduction == "sum" else rows.mean()
    kl = divergences.build("kl", temperature=4.0)(s, t).mean()
    expected = 0.1 * F.cross_entropy(s, y) + 0.9 * kl + 0.5 * term
    torch.testing.assert_close(module.losses(x, y)["loss"], expected)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=sinkd", "method.sinkhorn.epsilon=0"], r"method.sinkhorn: epsilon must be a number > 0"),
        (
            ["method=sinkd", "method.sinkhorn_reduction=max"],
            "method.sinkhorn_reduction must be one of sum, mean",
        ),
        (["method=pld", "method.ranking.weights=best"], "method.ranking: weights must be one of"),
        (
            ["method=bdkd", "method.divergences.reverse=nope"],
            r"method.divergences.reverse: unknown divergence 'nope'",
        ),
    ],
)
def test_bad_method_settings_are_one_line_config_errors(overrides, message):
    cfg = compose_config(overrides)
    datamodule = instantiate_datamodule(cfg.data, seed=0)
    untrained = StageContext(teacher=lambda teacher_cfg: build_network(teacher_cfg.model, datamodule))
    with pytest.raises(ConfigError, match=message):
        build_in_memory(cfg, datamodule, untrained)


@pytest.mark.slow
def test_pld_on_the_100_class_mixture_runs(tmp_path):
    record, _ = run_training(
        tmp_path,
        [
            "experiment=pld_synthetic100",
            "trainer.max_epochs=1",
            "method.teacher.max_epochs=1",
            "data.samples_per_class=5",
            "data.val_per_class=2",
            "data.test_per_class=2",
        ],
    )
    assert record["method"] == "pld" and record["data"] == "synthetic"
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0


@pytest.mark.slow
def test_sinkd_on_digits_runs(tmp_path):
    record, _ = run_training(
        tmp_path,
        [
            "experiment=sinkd_digits",
            "trainer.max_epochs=1",
            "method.teacher.max_epochs=1",
            "method.teacher.model.hidden=[16]",
        ],
    )
    assert record["method"] == "sinkd" and record["divergence"] == "kl"


@pytest.fixture(scope="module")
def cifar100_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CIFAR-100 stand-in and one teacher cache for both presets: their teachers (ResNet-56, one recipe,
    the same data) have one key, so the preset that runs second loads the teacher the first one trained."""
    folder = tmp_path_factory.mktemp("cifar100")
    write_cifar(folder / "data", "cifar100", per_class=3)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["pld_cifar100", "sinkd_cifar100"])
def test_cifar100_presets_run_a_couple_of_steps(cifar100_folder, experiment):
    record, _ = run_training(
        cifar100_folder,
        [
            f"experiment={experiment}",
            "trainer=cpu",
            f"data.data_dir={cifar100_folder / 'data'}",
            "data.val_fraction=0.34",
            "data.batch_size=8",
            "method.teacher.batch_size=64",
            "method.teacher.max_epochs=1",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
        ],
        run_name=experiment,
    )
    assert record["data"] == "cifar100"
    assert {"test/acc", "test/ece", "test/nll"} <= set(record["metrics"])


def official_sinkd_loss(student, teacher, y, alpha, kd_temperature, beta_scale):
    """The official SinKD student loss re-derived in float64 (loss.py / glue_train.py): α·KD + (1−α)·CE +
    β·scale·Σ Π W, KD = mean_i −Σ_k p_t log q_s at the KD temperature (no T²), the plan Π from 20
    row-then-column normalisations of exp(−W/0.1), W_ij = ‖softmax(s_i/2) − softmax(t_j/2)‖₁."""
    log_q = F.log_softmax(student / kd_temperature, dim=-1)
    p_t = F.softmax(teacher / kd_temperature, dim=-1)
    kd = -(p_t * log_q).sum(-1).mean()
    ce = F.cross_entropy(student, y)
    cost = torch.cdist(F.softmax(student / 2, dim=1), F.softmax(teacher / 2, dim=1), p=1)
    plan = torch.exp(-cost / 0.1)
    for _ in range(20):
        plan = plan / plan.sum(1, keepdim=True)
        plan = plan / plan.sum(0, keepdim=True)
    return alpha * kd + (1 - alpha) * ce + beta_scale * (plan * cost).sum()


def test_sinkd_preset_loss_is_the_official_formula_in_float64():
    """``experiment=sinkd_digits`` as configured: our total equals the official one minus α·H(p_t) (we use KL,
    the code a cross-entropy; the teacher entropy is constant in the student), with identical gradients."""
    cfg = compose_config(["experiment=sinkd_digits", "method.sinkhorn.solver=multiplicative"])
    assert cfg.divergence.t_squared is False and cfg.divergence.temperature == 4.0
    torch.manual_seed(0)
    student = MLP([6], 5, hidden=[8]).double()
    teacher = MLP([6], 5, hidden=[16]).double()
    method = cfg.method
    module = SinkhornDistillation(
        student, teacher, divergences.build(**cfg.divergence), method.alpha, 5, OPTIMIZER, 3,
        batch_transport=divergences.build("sinkhorn_batch", **method.sinkhorn),
        transport_weight=method.sinkhorn_weight * method.sinkhorn_scale,
        transport_reduction=method.sinkhorn_reduction,
    )  # fmt: skip
    x, y = torch.randn(12, 6, dtype=torch.float64), torch.randint(0, 5, (12,))
    ours = module.losses(x, y)["loss"]
    official = official_sinkd_loss(student(x), teacher(x).detach(), y, 0.9, 4.0, 0.8 * 0.001)
    p_t = F.softmax(teacher(x).detach() / 4.0, dim=-1)
    teacher_entropy = -(p_t * p_t.log()).sum(-1).mean()
    torch.testing.assert_close(ours + 0.9 * teacher_entropy, official, rtol=1e-12, atol=1e-12)
    ours_grads = torch.autograd.grad(ours, list(student.parameters()))
    official_grads = torch.autograd.grad(
        official_sinkd_loss(student(x), teacher(x).detach(), y, 0.9, 4.0, 0.8 * 0.001),
        list(student.parameters()),
    )
    for a, b in zip(ours_grads, official_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
