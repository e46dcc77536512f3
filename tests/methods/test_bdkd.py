"""BD-KD (reconstruction) and DML: the balance weights, the losses, and one real training step."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from divergence_lab import divergences
from divergence_lab.config.checks import CONF_DIR
from divergence_lab.methods.bdkd import BALANCE_RULES, BalancedOnlineDistillation, balance_weights, entropy
from divergence_lab.models.mlp import MLP
from tests.conftest import compose_config

OPTIMIZER = {"name": "adam", "lr": 1e-2, "weight_decay": 0.0, "scheduler": "none"}


def _module(balance="entropy_ratio", fixed_forward=0.5, temperature=2.0, lambda_teacher=1.0):
    torch.manual_seed(0)

    def divergence(name):
        return divergences.build(name, temperature=temperature)

    return BalancedOnlineDistillation(
        MLP([6], 5, hidden=[8]),
        MLP([6], 5, hidden=[16]),
        divergence("kl"),
        divergence("rkl"),
        divergence("kl"),
        balance,
        1.0,
        lambda_teacher,
        5,
        OPTIMIZER,
        OPTIMIZER,
        3,
        fixed_forward=fixed_forward,
    )


@pytest.mark.parametrize("rule", BALANCE_RULES)
def test_weights_are_in_unit_interval_and_sum_to_one(rule):
    torch.manual_seed(1)
    student, teacher = 5 * torch.randn(64, 7), 5 * torch.randn(64, 7)
    student[0] = teacher[0] = torch.tensor([1e4, 0, 0, 0, 0, 0, 0])  # both one-hot: zero entropies
    w_fwd, w_rev = balance_weights(student, teacher, rule, temperature=1.0)
    assert w_fwd.shape == w_rev.shape == (64,)
    assert torch.all((w_fwd >= 0) & (w_fwd <= 1)) and torch.all((w_rev >= 0) & (w_rev <= 1))
    torch.testing.assert_close(w_fwd + w_rev, torch.ones(64))
    assert torch.isfinite(w_fwd).all()


def test_entropy_ratio_follows_its_formula_and_inverted_swaps_it():
    student, teacher = torch.randn(16, 5), torch.randn(16, 5)
    h_q = entropy(F.log_softmax(student / 2, -1))
    h_p = entropy(F.log_softmax(teacher / 2, -1))
    w_fwd, w_rev = balance_weights(student, teacher, "entropy_ratio", temperature=2.0)
    torch.testing.assert_close(w_fwd, h_q / (h_p + h_q))
    inv_fwd, inv_rev = balance_weights(student, teacher, "inverted", temperature=2.0)
    torch.testing.assert_close(inv_fwd, w_rev)
    torch.testing.assert_close(inv_rev, w_fwd)
    gap_fwd, _ = balance_weights(student, teacher, "sigmoid_gap", temperature=2.0, gamma=0.3)
    torch.testing.assert_close(gap_fwd, torch.sigmoid((h_q - h_p) / 0.3))


def test_fixed_forward_one_is_exactly_the_dml_student_loss():
    module = _module(balance="fixed", fixed_forward=1.0)
    student, teacher, y = torch.randn(12, 5), torch.randn(12, 5), torch.randint(0, 5, (12,))
    terms = module.student_loss(student, teacher, y)
    log_q, log_p = F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1)
    dml = F.cross_entropy(student, y) + 4.0 * (log_p.exp() * (log_p - log_q)).sum(-1).mean()
    torch.testing.assert_close(terms["student_loss"], dml, rtol=0, atol=1e-6)


def test_inverted_student_loss_swaps_the_weights_of_the_two_terms():
    student, teacher, y = torch.randn(12, 5), torch.randn(12, 5), torch.randint(0, 5, (12,))
    ratio, inverted = _module("entropy_ratio"), _module("inverted")
    w_fwd, w_rev = balance_weights(student, teacher, "entropy_ratio", temperature=2.0)
    fwd = ratio.forward_divergence(student, teacher)
    rev = ratio.reverse_divergence(student, teacher)
    torch.testing.assert_close(
        ratio.student_loss(student, teacher, y)["distill"], (w_fwd * fwd + w_rev * rev).mean()
    )
    torch.testing.assert_close(
        inverted.student_loss(student, teacher, y)["distill"], (w_rev * fwd + w_fwd * rev).mean()
    )


def test_no_gradient_flows_through_the_weights_or_into_the_other_network():
    module = _module("entropy_ratio")
    student = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(8, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    w_fwd, w_rev = balance_weights(student, teacher, "entropy_ratio", temperature=2.0)
    assert not w_fwd.requires_grad and not w_rev.requires_grad
    loss = module.student_loss(student, teacher, y)["student_loss"]
    (grad_student,) = torch.autograd.grad(loss, student, retain_graph=True)
    # the same loss with the weights as plain constants has the same gradient
    fwd = module.forward_divergence(student, teacher.detach())
    rev = module.reverse_divergence(student, teacher.detach())
    constant = F.cross_entropy(student, y) + (w_fwd.detach() * fwd + w_rev.detach() * rev).mean()
    (expected,) = torch.autograd.grad(constant, student)
    torch.testing.assert_close(grad_student, expected)
    assert torch.autograd.grad(loss, teacher, allow_unused=True)[0] is None  # teacher detached
    teacher_loss = module.teacher_loss(teacher, student, y)["teacher_loss"]
    assert torch.autograd.grad(teacher_loss, student, allow_unused=True)[0] is None  # student detached


def test_teacher_term_is_kl_of_student_to_teacher_with_the_teacher_trained():
    module = _module(lambda_teacher=0.5)
    teacher, student, y = torch.randn(10, 5), torch.randn(10, 5), torch.randint(0, 5, (10,))
    log_p, log_q = F.log_softmax(teacher / 2, -1), F.log_softmax(student / 2, -1)
    expected = F.cross_entropy(teacher, y) + 0.5 * 4.0 * (log_q.exp() * (log_q - log_p)).sum(-1).mean()
    torch.testing.assert_close(module.teacher_loss(teacher, student, y)["teacher_loss"], expected)


def test_one_training_step_changes_both_networks():
    module = _module()
    optimizer = module.configure_optimizers()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    x, y = torch.randn(16, 6), torch.randint(0, 5, (16,))
    optimizer.zero_grad()
    module.losses(x, y)["loss"].backward()
    optimizer.step()
    changed = {name for name, p in module.named_parameters() if not torch.equal(p, before[name])}
    assert any(n.startswith("net.") for n in changed) and any(n.startswith("teacher.") for n in changed)
    assert len(changed) == len(before)


@pytest.mark.parametrize(
    "override, message",
    [
        ("method.balance=nope", "method.balance must be one of"),
        ("method.fixed_forward=2", r"method.fixed_forward must be in \[0, 1\]"),
        (
            "method.teacher.optimizer.name=sgd",
            "method.teacher.optimizer.name must equal method.optimizer.name",
        ),
    ],
)
def test_bad_method_values_are_refused(override, message):
    from divergence_lab.data import instantiate_datamodule
    from divergence_lab.ground.errors import ConfigError
    from divergence_lab.methods.stages import build_in_memory

    cfg = compose_config(["experiment=bdkd_digits", override])
    with pytest.raises(ConfigError, match=message):
        build_in_memory(cfg, instantiate_datamodule(cfg.data, seed=0))


def bdkd_variants() -> list[str]:
    """The method options whose YAML builds on ``bdkd`` (its defaults list names it)."""
    return [
        path.stem
        for path in sorted((CONF_DIR / "method").glob("*.yaml"))
        if "bdkd" in (OmegaConf.load(path).get("defaults") or [])
    ]


def test_dml_is_a_bdkd_variant():
    assert "dml" in bdkd_variants()


@pytest.mark.parametrize("method", bdkd_variants())
def test_variants_are_bdkd_with_one_setting_changed(method):
    base = compose_config(["method=bdkd"]).method
    variant = compose_config([f"method={method}"]).method
    changed = {k for k in base if base[k] != variant[k]}
    assert changed <= {"name", "balance", "fixed_forward"}
