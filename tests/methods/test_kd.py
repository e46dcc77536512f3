"""The KD objective and the teacher cache."""

import multiprocessing
import os

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from divergence_lab import divergences
from divergence_lab.config.checks import validate
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.kd import DistillationModule
from divergence_lab.models.mlp import MLP
from divergence_lab.run import teacher_cache as teachers
from tests.conftest import compose_config

OPTIMIZER = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "scheduler": "none"}


def _module(alpha, divergence="kl", **params):
    torch.manual_seed(0)
    student, teacher = MLP([6], 4, hidden=[8]), MLP([6], 4, hidden=[16])
    return DistillationModule(
        student, teacher, divergences.build(divergence, **params), alpha, 4, OPTIMIZER, 3
    )


def test_kd_loss_is_the_convex_combination_of_ce_and_the_registry_divergence():
    module = _module(alpha=0.3, divergence="rkl", temperature=2.0)
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    terms = module.losses(x, y)
    student, teacher = module.net(x), module.teacher(x)
    log_q, log_p = F.log_softmax(student / 2, -1), F.log_softmax(teacher / 2, -1)
    reverse_kl = 4.0 * (log_q.exp() * (log_q - log_p)).sum(-1).mean()  # T^2 * KL(q || p)
    expected = 0.7 * F.cross_entropy(student, y) + 0.3 * reverse_kl
    torch.testing.assert_close(terms["loss"], expected)
    torch.testing.assert_close(terms["distill"], reverse_kl)


def test_alpha_zero_is_plain_cross_entropy_and_divergence_choice_matters():
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    ce_only = _module(alpha=0.0)
    torch.testing.assert_close(ce_only.losses(x, y)["loss"], F.cross_entropy(ce_only.net(x), y))
    assert not torch.allclose(
        _module(0.5, "kl").losses(x, y)["loss"], _module(0.5, "tv").losses(x, y)["loss"]
    )


def test_teacher_is_frozen_and_stays_in_eval_mode():
    module = _module(alpha=0.5)
    module.train()
    assert not module.teacher.training and module.net.training
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    module.losses(x, y)["loss"].backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    assert all(p.grad is not None for p in module.net.parameters())
    optimizer = module.configure_optimizers()
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.net.parameters()}


def test_alpha_out_of_range_is_refused_before_anything_is_built():
    with pytest.raises(ConfigError, match=r"method.alpha must be a number in \[0, 1\] \(got 1.5\)"):
        validate(compose_config(["method.alpha=1.5"]))


def _teacher_config(**changes):
    cfg = compose_config(["method.teacher.max_epochs=1", "method.teacher.model.hidden=[16]"])
    teacher = OmegaConf.merge(cfg.method.teacher, changes)
    return teacher, cfg.data


def test_teacher_key_depends_on_teacher_and_data_but_not_on_student_settings():
    teacher, data = _teacher_config()
    key = teachers.teacher_key(teacher, data)
    assert key == teachers.teacher_key(*_teacher_config())
    assert key != teachers.teacher_key(*_teacher_config(seed=1))
    assert key != teachers.teacher_key(teacher, OmegaConf.merge(data, {"split_seed": 3}))
    assert len(key) == 16


def test_cached_teacher_is_loaded_not_retrained(tmp_path, monkeypatch):
    teacher, data = _teacher_config()
    first = teachers.load_or_train_teacher(teacher, data, tmp_path, {"accelerator": "cpu", "devices": 1})
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    monkeypatch.setattr(teachers, "fit_and_test", lambda *a, **k: pytest.fail("teacher trained twice"))
    second = teachers.load_or_train_teacher(teacher, data, tmp_path, {"accelerator": "cpu", "devices": 1})
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    meta = next(tmp_path.glob("*/meta.json")).read_text()
    assert "test/acc" in meta


def _load_in_child(teacher, data, cache_dir, trained_log):
    original = teachers.fit_and_test

    def counting_train(*args, **kwargs):
        with open(trained_log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return original(*args, **kwargs)

    teachers.fit_and_test = counting_train
    teachers.load_or_train_teacher(teacher, data, cache_dir, {"accelerator": "cpu", "devices": 1})


def test_concurrent_jobs_wait_on_the_lock_and_train_the_teacher_once(tmp_path):
    teacher, data = _teacher_config()
    log = tmp_path / "trained.txt"
    context = multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
    workers = [
        context.Process(target=_load_in_child, args=(teacher, data, tmp_path / "cache", log))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert len(log.read_text().splitlines()) == 1
    assert len(list((tmp_path / "cache").glob("*/teacher.pt"))) == 1


def test_student_batch_size_does_not_change_the_teacher():
    teacher, data = _teacher_config()
    small = OmegaConf.merge(data, {"batch_size": 16})
    assert teachers.teacher_key(
        teacher, teachers.teacher_data_config(teacher, small)
    ) == teachers.teacher_key(teacher, teachers.teacher_data_config(teacher, data))
    assert teachers.teacher_data_config(teacher, small).batch_size == teacher.batch_size


def test_teacher_depends_on_its_own_seed_only_not_on_the_callers_random_state(tmp_path):
    teacher, data = _teacher_config()
    trained = []
    for caller_seed, folder in ((1, "a"), (2, "b")):
        torch.manual_seed(caller_seed)  # e.g. the seed of whichever student job trains the teacher first
        net = teachers.load_or_train_teacher(
            teacher, data, tmp_path / folder, {"accelerator": "cpu", "devices": 1}
        )
        trained.append(net.state_dict())
    for name, value in trained[0].items():
        assert torch.equal(value, trained[1][name]), name


def test_dkd_ramps_in_over_its_warm_up_epochs_as_mdistiller(monkeypatch):
    torch.manual_seed(0)
    student, teacher = MLP([6], 4, hidden=[8]), MLP([6], 4, hidden=[16])
    dkd = divergences.build("dkd", temperature=4.0)
    module = DistillationModule(student, teacher, dkd, 0.5, 4, OPTIMIZER, 3, warmup_epochs=20)
    x, y = torch.randn(10, 6), torch.randint(0, 4, (10,))
    term = dkd(student(x), teacher(x), labels=y).mean()
    ce = F.cross_entropy(student(x), y)
    for epoch, factor in ((0, 1 / 20), (4, 5 / 20), (19, 1.0), (100, 1.0)):  # epochs counted from 1
        monkeypatch.setattr(DistillationModule, "current_epoch", property(lambda self, e=epoch: e))
        torch.testing.assert_close(module.losses(x, y)["loss"], 0.5 * ce + 0.5 * factor * term)


def test_the_warm_up_comes_from_the_config_by_divergence_name():
    from divergence_lab.methods.kd import warmup_epochs

    assert warmup_epochs(compose_config(["method=kd", "divergence=dkd"])) == 20
    assert warmup_epochs(compose_config(["method=kd", "divergence=kl"])) == 0
    with pytest.raises(ConfigError, match=r"method.divergence_warmup.dkd must be an integer >= 0"):
        validate(compose_config(["method=kd", "divergence=dkd", "method.divergence_warmup.dkd=-1"]))
