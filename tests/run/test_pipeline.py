"""End-to-end runs of the real pipeline on the embedded digits (tiny epochs), checked on disk."""

import json

import pytest
import torch
import yaml

from divergence_lab.report.wandb_files import offline_run_files, read_offline_run
from tests.conftest import run_training

pytestmark = pytest.mark.slow


def test_run_directory_contract(tmp_path, tiny_overrides):
    record, run_dir = run_training(tmp_path, [*tiny_overrides, "divergence=js", "seed=4"])
    assert set(record["metrics"]) == {
        "test/acc",
        "test/ece",
        "test/nll",
        "test/brier",
        "test/agreement",
        "test/kl_teacher_student",
        "val/acc",
        "train/loss",
    }
    assert record["selected_epoch"] in (1, 2) and record["n_test"] > 0
    assert len(record["per_class_acc"]) == 10 and (run_dir / "confusion.json").is_file()
    assert 0.1 < record["metrics"]["test/acc"] <= 1.0
    assert 0.0 <= record["metrics"]["test/ece"] <= 1.0
    assert record["seed"] == 4 and record["divergence"] == "js" and record["method"] == "kd"
    assert record["wall_time_s"] > 0 and "commit" in record["git"]
    assert record["versions"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    teacher = next(iter(json.loads((run_dir / "teacher.json").read_text()).values()))
    assert teacher["numerics"] == {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cpu",
        "precision": "32-true",
    }
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["divergence"]["name"] == "js" and resolved["seed"] == 4
    assert "${" not in (run_dir / "config.yaml").read_text()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    curves = (run_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert "val/acc" in curves[0] and "train/loss" in curves[0]
    # the teacher was trained once and cached beside the runs
    assert len(list((tmp_path / "teachers").glob("*/teacher.pt"))) == 1


def test_same_seed_gives_identical_metrics_and_other_seed_differs(tmp_path, tiny_overrides):
    first, _ = run_training(tmp_path, [*tiny_overrides, "seed=1"], "a")
    second, _ = run_training(tmp_path, [*tiny_overrides, "seed=1"], "b")
    other, _ = run_training(tmp_path, [*tiny_overrides, "seed=2"], "c")
    assert first["metrics"] == second["metrics"]
    assert first["metrics"] != other["metrics"]


def test_student_does_not_depend_on_whether_the_teacher_was_cached(tmp_path, tiny_overrides):
    """Training the teacher must not consume the student's random stream."""
    trained_teacher, _ = run_training(tmp_path / "one", [*tiny_overrides, "seed=3"])
    cached_teacher, _ = run_training(tmp_path / "one", [*tiny_overrides, "seed=3"], "again")
    assert trained_teacher["metrics"] == cached_teacher["metrics"]


def test_teacher_method_and_cnn_model(tmp_path):
    record, _ = run_training(
        tmp_path, ["method=teacher", "model=cnn", "model.channels=[4]", "trainer.max_epochs=1"]
    )
    assert record["method"] == "teacher" and record["divergence"] is None
    assert not (tmp_path / "teachers").exists()


def test_synthetic_data_with_many_classes(tmp_path, tiny_overrides):
    record, _ = run_training(
        tmp_path,
        [
            *tiny_overrides,
            "data=synthetic",
            "data.num_classes=100",
            "data.samples_per_class=10",
            "data.dim=16",
            "divergence=sinkhorn",
            "divergence.iters=10",
        ],
    )
    assert record["data"] == "synthetic" and record["divergence"] == "sinkhorn"


def test_wandb_offline_run_reads_back_with_config_history_summary_and_labels(
    tmp_path, tiny_overrides, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    record, run_dir = run_training(tmp_path, [*tiny_overrides, "logger=wandb", "divergence=rkl", "seed=3"])
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    files = offline_run_files(run_dir)
    assert [f.name for f in files] == [f"run-{run_id}.wandb"]
    run = read_offline_run(files[0])
    assert run.run_id == run_id and run.project == "divergence_lab"
    assert run.group == "kd_digits" and run.job_type == "kd"
    assert set(run.tags) == {"rkl", "kd", "digits", "seed=3"}
    assert run.config["divergence"]["name"] == "rkl" and run.config["seed"] == 3  # the resolved config
    assert run.config["paths"]["output_root"] == str(tmp_path)
    val_rows = [row for row in run.history if "val/acc" in row]
    assert len(val_rows) == 2  # one per epoch
    assert max(row["val/acc"] for row in val_rows) == pytest.approx(record["metrics"]["val/acc"])
    assert run.summary["best/val_acc"] == pytest.approx(record["metrics"]["val/acc"])
    for name in ("test/acc", "test/ece"):
        assert run.summary[name] == pytest.approx(record["metrics"][name])
    assert run.exit_code == 0


def test_rerun_of_a_finished_run_returns_its_result_without_training(tmp_path, tiny_overrides):
    record, run_dir = run_training(tmp_path, tiny_overrides, "same")
    last = run_dir / "checkpoints" / "last.ckpt"
    written = last.stat().st_mtime_ns
    again, _ = run_training(tmp_path, tiny_overrides, "same")
    assert again == record  # metrics.json untouched
    assert last.stat().st_mtime_ns == written
    assert json.loads((run_dir / "status.json").read_text())["attempt"] == 1  # no second attempt started


def test_status_file_records_attempts_and_failures(tmp_path, tiny_overrides):
    from divergence_lab.ground.errors import ConfigError
    from divergence_lab.ground.record_format import read_status

    _, run_dir = run_training(tmp_path, tiny_overrides, "job")
    assert read_status(run_dir) == {"state": "finished"}
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["attempt"] == 1 and status["pid"] > 0
    # refused by the checks before the run starts: nothing written
    with pytest.raises(ConfigError, match="method.alpha"):
        run_training(tmp_path, [*tiny_overrides, "method.alpha=2"], "refused")
    assert read_status(tmp_path / "refused") == {"state": "starting"}
    assert list((tmp_path / "refused").iterdir()) == []
    # refused by the data module once the run started: recorded as failed
    with pytest.raises(ConfigError, match="data.val_fraction"):
        run_training(tmp_path, [*tiny_overrides, "data.val_fraction=1.5"], "broken")
    failed = read_status(tmp_path / "broken")
    assert failed["state"] == "failed" and "data.val_fraction must be in (0, 1)" in failed["error"]


def test_epoch_seeding_makes_random_draws_a_function_of_seed_and_epoch(tmp_path):
    """Dropout-like draws during an epoch do not depend on what the process drew before."""
    from divergence_lab.run.resumption import EpochSeeding

    class FakeTrainer:
        current_epoch = 4

    seeding = EpochSeeding(seed=7)
    seeding.on_train_epoch_start(FakeTrainer(), None)
    first = torch.rand(5)
    torch.rand(100)  # a different history
    seeding.on_train_epoch_start(FakeTrainer(), None)
    assert torch.equal(torch.rand(5), first)
    FakeTrainer.current_epoch = 5
    seeding.on_train_epoch_start(FakeTrainer(), None)
    assert not torch.equal(torch.rand(5), first)


def test_online_distillation_reports_student_and_teacher_calibration(tmp_path):
    record, run_dir = run_training(
        tmp_path, ["experiment=bdkd_digits", "trainer.max_epochs=2", "method.teacher.model.hidden=[32]"]
    )
    assert record["method"] == "bdkd" and record["divergence"] is None
    for prefix in ("test/", "test/teacher_"):
        for name in ("acc", "ece", "nll", "brier"):
            assert 0.0 <= record["metrics"][prefix + name] < 10
    curves = json.loads((run_dir / "reliability.json").read_text())
    assert set(curves) == {"model", "teacher"}
    assert abs(curves["model"]["ece"] - record["metrics"]["test/ece"]) < 1e-5
    assert (run_dir / "reliability.png").is_file()
