"""What a real tiny run records about its tested checkpoint: the selected epoch and rule (against its own CSV
curves), the split sizes, per-class accuracy and confusion.json, teacher-student metrics recomputed in
float64 from the tested checkpoint, and the same facts in its offline W&B run (epochs counted from 1)."""

import csv
import json

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from divergence_lab.data import instantiate_datamodule
from divergence_lab.metrics.selection import SelectionRule, select_epoch
from divergence_lab.models import build_network
from divergence_lab.report.wandb_files import offline_run_files, read_offline_run
from tests.conftest import compose_config, run_training

pytestmark = pytest.mark.slow

EPOCHS = 3
OVERRIDES = [f"trainer.max_epochs={EPOCHS}", "method.teacher.max_epochs=2", "seed=5"]


def validation_curve(run_dir):
    """``[{val/acc, val/nll}]`` per epoch, in order, from the run's CSV log."""
    with (run_dir / "csv" / "metrics.csv").open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/acc")]
    rows.sort(key=lambda row: int(row["epoch"]))
    assert [int(row["epoch"]) for row in rows] == list(range(EPOCHS))  # Lightning's 0-based column
    return [{name: float(row[name]) for name in ("val/acc", "val/nll")} for row in rows]


def checkpoint_logits(run_dir, cfg, datamodule):
    """Student and teacher logits on the test set, in float64, from the tested checkpoint ``best.ckpt``."""
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)["state_dict"]
    networks = {}
    for name, model_cfg in (("net", cfg.model), ("teacher", cfg.method.teacher.model)):
        network = build_network(model_cfg, datamodule)
        prefix = f"{name}."
        network.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        networks[name] = network.double().eval()
    inputs, labels = zip(*datamodule.test_dataloader(), strict=True)
    x, y = torch.cat(inputs).double(), torch.cat(labels)
    with torch.no_grad():
        return networks["net"](x).numpy(), networks["teacher"](x).numpy(), y.numpy()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("WANDB_MODE", "offline")
    monkeypatch_module.setenv("WANDB_SILENT", "true")
    return run_training(tmp_path_factory.mktemp("record"), [*OVERRIDES, "logger=wandb"])


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_selected_epoch_is_the_rule_applied_to_the_logged_validation_curve(tiny_run):
    record, run_dir = tiny_run
    curve = validation_curve(run_dir)
    expected = select_epoch(SelectionRule("val/acc", "val/nll"), curve)
    assert record["selected_epoch"] == expected and isinstance(record["selected_epoch"], int)
    assert record["checkpoint_selection"] == "best val/acc, ties by lowest val/nll"
    assert record["metrics"]["val/acc"] == pytest.approx(curve[expected - 1]["val/acc"], abs=1e-7)
    assert torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)["epoch"] + 1 == expected


def test_split_sizes_are_the_data_module_splits(tiny_run):
    record, _ = tiny_run
    cfg = compose_config(OVERRIDES)
    datamodule = instantiate_datamodule(cfg.data, seed=cfg.seed)
    for split, tensors in datamodule.splits.items():
        assert record[f"n_{split}"] == len(tensors.tensors[1])
    assert record["n_train"] + record["n_val"] + record["n_test"] == 1797  # scikit-learn's digits


def test_teacher_student_metrics_and_per_class_accuracy_recomputed_from_the_tested_checkpoint(tiny_run):
    record, run_dir = tiny_run
    cfg = compose_config(OVERRIDES)
    student, teacher, labels = checkpoint_logits(
        run_dir, cfg, instantiate_datamodule(cfg.data, seed=cfg.seed)
    )
    metrics = record["metrics"]
    assert metrics["test/agreement"] == pytest.approx(
        np.mean(student.argmax(1) == teacher.argmax(1)), abs=1e-6
    )
    log_p, log_q = log_softmax(teacher, axis=1), log_softmax(student, axis=1)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1).mean()
    assert metrics["test/kl_teacher_student"] == pytest.approx(kl, rel=1e-4)
    predicted = student.argmax(1)
    per_class = [np.mean(predicted[labels == k] == k) for k in range(10)]
    np.testing.assert_allclose(record["per_class_acc"], per_class, atol=1e-12)
    confusion = json.loads((run_dir / "confusion.json").read_text())
    counts = np.array(confusion["counts"])
    assert counts.sum() == record["n_test"] and confusion["rows"] == "true class"
    np.testing.assert_array_equal(
        np.diag(counts), [np.sum((predicted == k) & (labels == k)) for k in range(10)]
    )
    assert np.trace(counts) / counts.sum() == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_wandb_counts_epochs_from_one_and_its_summary_names_the_tested_checkpoint(tiny_run):
    record, run_dir = tiny_run
    (run_file,) = offline_run_files(run_dir)
    run = read_offline_run(run_file)
    val_rows = [row for row in run.history if "val/acc" in row]
    assert [row["epoch"] for row in val_rows] == list(range(1, EPOCHS + 1))  # the report's count
    # the validation charts are drawn against epoch: each val metric is defined with it by name
    assert run.step_metrics["val/acc"] == run.step_metrics["val/nll"] == "epoch"
    curve = validation_curve(run_dir)
    assert [row["val/acc"] for row in val_rows] == pytest.approx([epoch["val/acc"] for epoch in curve])
    train_epochs = {row["epoch"] for row in run.history if "train/loss_step" in row}
    assert train_epochs <= set(range(1, EPOCHS + 1))  # steps of epoch k (1-based) while it runs
    test_rows = [row for row in run.history if "test/acc" in row]
    assert [row["epoch"] for row in test_rows] == [EPOCHS]  # after EPOCHS epochs of training
    for key in ("selected_epoch", "n_train", "n_val", "n_test"):
        assert run.summary[key] == record[key]
    assert run.summary["checkpoint_selection"] == record["checkpoint_selection"]
    # a clean summary: no last-epoch leftovers beside the tested checkpoint's numbers
    assert not {"val/acc", "val/nll", "epoch", "trainer/global_step", "train/loss_epoch"} & set(run.summary)
    assert run.summary["selected/val_acc"] == record["metrics"]["val/acc"]
    ((key, teacher),) = json.loads((run_dir / "teacher.json").read_text()).items()
    assert run.summary["teacher/acc"] == teacher["test_metrics"]["test/acc"]
    assert run.summary["teacher/key"] == key
    assert run.git_commit == run.config["git/commit"] == record["git"]["commit"]
    assert run.config["git/dirty"] == record["git"]["dirty"]
    # the pictures and the per-class table, logged at the end, with their files in the offline run folder
    (media,) = [row for row in run.history if "images/reliability._type" in row]
    files = run_file.parent / "files"
    for key in ("images/reliability", "images/epoch_curves", "test/per_class_acc"):
        assert (files / media[f"{key}.path"]).is_file()
    assert media["images/epoch_curves._type"] == "image-file"
    table = json.loads((files / media["test/per_class_acc.path"]).read_text())
    assert table["columns"] == ["class", "accuracy"]
    assert [row[1] for row in table["data"]] == pytest.approx(record["per_class_acc"])
    assert [row[0] for row in table["data"]] == list(range(len(record["per_class_acc"])))
    for name in ("test/agreement", "test/kl_teacher_student"):
        assert run.summary[name] == pytest.approx(record["metrics"][name])
