"""Teacher-student agreement and KL, and per-class accuracy, against float64 NumPy / SciPy / scikit-learn."""

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from sklearn.metrics import confusion_matrix, recall_score
from torchmetrics.classification import MulticlassConfusionMatrix

from divergence_lab.metrics.distillation import TeacherStudentMetrics
from divergence_lab.metrics.names import lower_is_better
from divergence_lab.metrics.per_class import confusion_record, per_class_accuracy

CLASSES = 7


def reference(student: np.ndarray, teacher: np.ndarray) -> tuple[float, float]:
    """Agreement and mean KL(softmax(teacher) || softmax(student)) in float64."""
    agreement = np.mean(student.argmax(1) == teacher.argmax(1))
    log_p, log_q = log_softmax(teacher, axis=1), log_softmax(student, axis=1)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1).mean()
    return float(agreement), float(kl)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: near one-hot distributions, large log-ratios
def test_agreement_and_kl_over_uneven_batches_match_float64_numpy(scale):
    generator = torch.Generator().manual_seed(3)
    student = (scale * torch.randn(203, CLASSES, generator=generator)).numpy().astype(np.float64)
    teacher = (scale * torch.randn(203, CLASSES, generator=generator)).numpy().astype(np.float64)
    teacher[:50] = student[:50] + 0.01  # some rows agree
    metrics = TeacherStudentMetrics(CLASSES)
    for start in range(0, 203, 64):  # batches of 64, 64, 64, 11
        rows = slice(start, start + 64)
        metrics.update(torch.tensor(student[rows]).float(), torch.tensor(teacher[rows]).float())
    agreement, kl = reference(student, teacher)
    assert metrics.agreement.compute().item() == pytest.approx(agreement, abs=1e-7)
    assert metrics.kl_teacher_student.compute().item() == pytest.approx(kl, rel=1e-4, abs=1e-6)
    assert set(metrics.named("test/")) == {"test/agreement", "test/kl_teacher_student"}


def test_identical_networks_agree_fully_with_zero_kl():
    logits = torch.randn(40, CLASSES)
    metrics = TeacherStudentMetrics(CLASSES)
    metrics.update(logits, logits.clone())
    assert metrics.agreement.compute().item() == 1.0
    assert metrics.kl_teacher_student.compute().item() == pytest.approx(0.0, abs=1e-6)


def test_kl_is_lower_is_better_and_agreement_higher():
    assert lower_is_better("test/kl_teacher_student") and not lower_is_better("test/agreement")


def test_per_class_accuracy_and_confusion_match_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES - 1, (300,), generator=generator)  # the last class has no example
    logits = torch.randn(300, CLASSES, generator=generator)
    logits[torch.arange(300), labels] += 1.0  # better than chance
    confusion = MulticlassConfusionMatrix(CLASSES)
    for rows in torch.arange(300).split(128):
        confusion.update(logits[rows], labels[rows])
    counts = confusion.compute()
    predicted = logits.argmax(1).numpy()
    expected_counts = confusion_matrix(labels.numpy(), predicted, labels=list(range(CLASSES)))
    np.testing.assert_array_equal(counts.numpy(), expected_counts)
    recall = recall_score(
        labels.numpy(), predicted, labels=list(range(CLASSES)), average=None, zero_division=np.nan
    )
    accuracies = per_class_accuracy(counts)
    assert accuracies[-1] is None and np.isnan(recall[-1])
    np.testing.assert_allclose(accuracies[:-1], recall[:-1], rtol=0, atol=1e-12)
    record = confusion_record(counts)
    assert record["counts"] == expected_counts.tolist() and record["classes"] == list(range(CLASSES))
    assert record["rows"] == "true class" and record["columns"] == "predicted class"
