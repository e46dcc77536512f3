"""Every distillation method is tested for agreement with its teacher and KL(teacher ‖ student), computed
here again in float64 from the two networks' logits; classifiers count their test predictions per class."""

import lightning as L
import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from divergence_lab.data import instantiate_datamodule
from divergence_lab.methods.stages import build_module, cpu_state
from divergence_lab.metrics.per_class import CountsTestClasses
from divergence_lab.models import build_network
from tests.conftest import compose_config

TEACHER_STUDENT = ("test/agreement", "test/kl_teacher_student")


def after_test(method: str):
    """The method's module on digits (an untrained teacher stands in for the cached one), after a test run:
    ``(module, logged test metrics, test inputs, test labels)``."""
    cfg = compose_config([f"method={method}", "seed=2"])
    datamodule = instantiate_datamodule(cfg.data, seed=cfg.seed)
    torch.manual_seed(0)
    outputs = {}
    if cfg.method.get("stages"):  # offline KD: the teacher stage's output
        outputs["teacher"] = {"state": cpu_state(build_network(cfg.method.teacher.model, datamodule))}
    module = build_module(cfg, datamodule, outputs)
    trainer = L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu"
    )
    (logged,) = trainer.test(module, dataloaders=datamodule.test_dataloader(), verbose=False)
    inputs, labels = zip(*datamodule.test_dataloader(), strict=True)
    return module, logged, torch.cat(inputs), torch.cat(labels)


def float64_logits(network, x):
    network = network.double().eval()
    with torch.no_grad():
        return network(x.double()).numpy()


@pytest.mark.parametrize("method", ["kd", "pld", "sinkd", "bdkd", "dml"])
def test_distillation_methods_report_agreement_and_kl_to_their_teacher(method):
    module, logged, x, y = after_test(method)
    student, teacher = float64_logits(module.net, x), float64_logits(module.teacher, x)
    agreement = np.mean(student.argmax(1) == teacher.argmax(1))
    log_p, log_q = log_softmax(teacher, axis=1), log_softmax(student, axis=1)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1).mean()
    assert logged["test/agreement"] == pytest.approx(agreement, abs=1e-6)
    assert logged["test/kl_teacher_student"] == pytest.approx(kl, rel=1e-4)
    assert logged["test/acc"] == pytest.approx(np.mean(student.argmax(1) == y.numpy()), abs=1e-6)


def test_a_method_without_a_teacher_reports_no_teacher_student_metric():
    module, logged, _, _ = after_test("teacher")
    assert module.distilled_teacher() is None
    assert not set(TEACHER_STUDENT) & set(logged)


def test_the_confusion_matrix_counts_the_tested_network_once_per_test():
    module, logged, x, y = after_test("bdkd")
    assert isinstance(module, CountsTestClasses)
    counts = module.test_class_counts()
    predicted = float64_logits(module.net, x).argmax(1)
    expected = np.zeros((10, 10), dtype=np.int64)
    np.add.at(expected, (y.numpy(), predicted), 1)
    np.testing.assert_array_equal(counts.numpy(), expected)  # the student's, not the online teacher's
    assert counts.trace().item() / len(y) == pytest.approx(logged["test/acc"], abs=1e-6)
