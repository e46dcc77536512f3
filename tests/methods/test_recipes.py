"""Teacher recipes say what to train and train through the service they are given; a stage context made
without that service refuses to train."""

import pytest
from omegaconf import OmegaConf

from divergence_lab.methods.cross_entropy import CrossEntropyModule
from divergence_lab.methods.recipes import (
    CLASSIFIER,
    CLASSIFIER_PROGRESS,
    build_classifier,
    classifier_recipe,
)
from divergence_lab.methods.stages import StageContext
from tests.conftest import compose_config


class RecordingService:
    """A fit-and-test service that trains nothing: it records what it was asked to fit."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, module, datamodule, max_epochs, progress):
        self.calls.append((module, datamodule, max_epochs, dict(progress)))
        return {"test/acc": 0.5}


def test_the_classifier_recipe_trains_a_cross_entropy_module_through_its_service():
    cfg = compose_config(["method.teacher.max_epochs=3", "method.teacher.model.hidden=[8]"])
    service = RecordingService()
    recipe = classifier_recipe(service)
    datamodule, net = recipe.build(cfg.method.teacher, cfg.data)
    assert recipe.name == CLASSIFIER and recipe.build is build_classifier
    assert recipe.train(net, cfg.method.teacher, datamodule) == {"test/acc": 0.5}
    ((module, fitted_data, epochs, progress),) = service.calls
    assert isinstance(module, CrossEntropyModule) and module.net is net
    assert fitted_data is datamodule and epochs == 3 and progress == CLASSIFIER_PROGRESS


def test_a_context_without_a_training_service_refuses_to_train():
    context = StageContext()
    with pytest.raises(RuntimeError, match="give StageContext a fit_and_test service"):
        context.fit_and_test(None, None, 1, {})
    with pytest.raises(RuntimeError, match="needs a teacher"):
        context.trained_teacher(OmegaConf.create({}))
