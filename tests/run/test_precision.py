"""``trainer.precision``: ``auto`` (trainer=gpu) resolved when the Trainer is built, the values the checks
accept, and the teacher cache training under the run's precision without leaving global flags behind."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from omegaconf import OmegaConf

from divergence_lab.config.checks import check_precision, validate_settings
from divergence_lab.ground.errors import ConfigError
from divergence_lab.run import pipeline
from divergence_lab.run import teacher_cache as teachers
from tests.conftest import compose_config


def _trainer(**values):
    return OmegaConf.create({"accelerator": "gpu", "devices": 1, **values})


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device that does (``fake_gpu(True)``) or does not have native bfloat16."""

    def make(native_bf16: bool) -> list[dict]:
        calls: list[dict] = []

        def is_bf16_supported(**kwargs):
            calls.append(kwargs)
            return native_bf16

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Test GPU")
        return calls

    return make


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("trainer.precision")]


def test_auto_is_bf16_mixed_on_a_gpu_with_native_bfloat16_and_says_so(fake_gpu, caplog):
    caplog.set_level(logging.INFO, logger="divergence_lab")
    calls = fake_gpu(True)
    assert pipeline.resolve_precision(_trainer(precision="auto")) == "bf16-mixed"
    assert calls == [{"including_emulation": False}]  # emulated bfloat16 (pre-Ampere) does not count
    assert _lines(caplog) == ["trainer.precision=auto: bf16-mixed (Test GPU computes in bfloat16)"]


def test_auto_is_32_true_without_native_bfloat16_or_off_the_gpu(fake_gpu, caplog):
    caplog.set_level(logging.INFO, logger="divergence_lab")
    fake_gpu(False)
    assert pipeline.resolve_precision(_trainer(precision="auto")) == "32-true"
    assert pipeline.resolve_precision(_trainer(precision="auto", accelerator="cpu")) == "32-true"
    assert _lines(caplog) == [
        "trainer.precision=auto: 32-true (Test GPU has no native bfloat16)",
        "trainer.precision=auto: 32-true (not on a CUDA GPU)",
    ]


def test_explicit_values_pass_through_and_only_precision_changes(fake_gpu):
    fake_gpu(True)
    assert pipeline.resolve_precision(_trainer(precision="16-mixed")) == "16-mixed"
    assert pipeline.resolve_precision(_trainer()) is None
    arguments = pipeline.trainer_arguments(_trainer(precision="auto", max_epochs=3))
    assert arguments == {"accelerator": "gpu", "devices": 1, "max_epochs": 3, "precision": "bf16-mixed"}
    assert "precision" not in pipeline.trainer_arguments(compose_config([]).trainer)  # trainer=cpu: unset


def test_the_gpu_trainer_asks_for_auto_and_the_cpu_one_for_nothing():
    assert compose_config(["trainer=gpu"]).trainer.precision == "auto"
    assert "precision" not in compose_config([]).trainer


@pytest.mark.parametrize("value", ["auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true", None])
def test_the_checks_accept_lightning_precisions_and_auto(value):
    check_precision(_trainer(precision=value))
    validate_settings(compose_config(["trainer=gpu", f"trainer.precision={value or 'null'}"]))


@pytest.mark.parametrize(
    ("trainer", "message"),
    [
        (_trainer(precision="fp8"), "trainer.precision must be one of auto, 32-true, "),
        (_trainer(precision=32), "trainer.precision must be one of .* \\(got 32\\)"),
        (_trainer(precision="bf16"), "\\(got 'bf16'\\)"),
        (_trainer(precision="16-mixed", accelerator="cpu"), "trainer.precision=16-mixed needs a GPU"),
    ],
)
def test_the_checks_refuse_other_values_in_one_line(trainer, message):
    with pytest.raises(ConfigError, match=message) as refused:
        check_precision(trainer)
    assert "\n" not in str(refused.value)


def test_teachers_train_under_the_run_precision(monkeypatch):
    seen = {}
    monkeypatch.setattr(teachers, "load_or_train_teacher", lambda *args: seen.setdefault("kwargs", args[3]))
    cfg = compose_config(["trainer=gpu"])
    pipeline.stage_context(cfg, None, torch.device("cpu"), "bf16-mixed").trained_teacher(cfg.method.teacher)
    assert seen["kwargs"] == {
        "accelerator": "gpu",
        "devices": 1,
        "deterministic": True,
        "precision": "bf16-mixed",
    }
    seen.clear()
    pipeline.stage_context(cfg, None, torch.device("cpu")).trained_teacher(cfg.method.teacher)
    assert "precision" not in seen["kwargs"]


def test_training_a_teacher_leaves_the_global_torch_flags_as_they_were(tmp_path, monkeypatch):
    """Its Trainer(deterministic=True) must not switch a trainer=gpu run (deterministic: false) into
    deterministic algorithms for the student's fit (which would then depend on whether the teacher was
    cached)."""
    monkeypatch.delenv(teachers.CUBLAS_WORKSPACE, raising=False)
    cfg = compose_config(["method.teacher.max_epochs=1", "method.teacher.model.hidden=[8]"])
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(False)
    try:
        cpu = {"accelerator": "cpu", "devices": 1, "deterministic": True}
        teachers.load_or_train_teacher(cfg.method.teacher, cfg.data, tmp_path, cpu)
        assert not torch.are_deterministic_algorithms_enabled()
        assert teachers.CUBLAS_WORKSPACE not in os.environ
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
