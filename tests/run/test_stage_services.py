"""The services a run hands to its stages: the fit-and-test service and the teacher cache train under the
same trainer settings (the run's accelerator and resolved precision, one device, deterministic)."""

import pytest
import torch

from divergence_lab.run import pipeline
from divergence_lab.run import teacher_cache as teachers
from tests.conftest import compose_config


@pytest.mark.parametrize("precision", [None, "bf16-mixed"])
def test_fit_and_test_trains_under_the_settings_of_the_teacher_cache(monkeypatch, precision):
    seen = {}

    def fit_and_test(module, datamodule, max_epochs, trainer_kwargs, progress):
        seen["fit"] = trainer_kwargs, progress
        return {"test/acc": 1.0}

    monkeypatch.setattr(teachers, "load_or_train_teacher", lambda *args: seen.setdefault("cache", args[3]))
    monkeypatch.setattr(teachers, "fit_and_test", fit_and_test)
    cfg = compose_config(["trainer=gpu"])
    context = pipeline.stage_context(cfg, None, torch.device("cpu"), precision)
    context.trained_teacher(cfg.method.teacher)
    assert context.fit_and_test("module", "data", 2, {"loss": "train/loss"}) == {"test/acc": 1.0}
    settings, progress = seen["fit"]
    assert settings == seen["cache"] and progress == {"loss": "train/loss"}
    assert settings["accelerator"] == "gpu" and settings["devices"] == 1 and settings["deterministic"]
    assert settings.get("precision") == precision
