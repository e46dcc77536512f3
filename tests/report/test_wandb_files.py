"""The offline W&B reader against files written by wandb itself, including records that span blocks, and
against the W&B runs of real training runs: the flat ``run/`` labels in the config, the metrics in the
summary."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict

from divergence_lab.report.wandb_files import (
    BLOCK_SIZE,
    OfflineRun,
    offline_run_files,
    read_offline_run,
    record_payloads,
)
from divergence_lab.run.loggers import summary_values
from tests.conftest import compose_config

WRITER = textwrap.dedent(
    """
    import sys, wandb
    run = wandb.init(project="p", id="r1", group="study/sweep", job_type="kd", tags=["kl", "seed=0"],
                     dir=sys.argv[1], config={"blob": "x" * 100_000, "nested": {"t": 2.0}})
    for step in range(50):
        run.log({"val/acc": step / 100, "epoch": step})
    run.config.update({"late": [1, 2]})
    run.summary.update({"best/val_acc": 0.49})
    run.finish()
    """
)


@pytest.fixture(scope="module")
def offline_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wandb")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", WRITER, str(folder)], check=True, env=env, timeout=120)
    (path,) = folder.glob("wandb/offline-run-*-r1/run-r1.wandb")
    return path


def test_reads_identity_config_history_and_summary(offline_file):
    run = read_offline_run(offline_file)
    assert (run.run_id, run.project, run.group, run.job_type) == ("r1", "p", "study/sweep", "kd")
    assert run.tags == ["kl", "seed=0"]
    assert run.config["blob"] == "x" * 100_000  # a record longer than one 32 KiB block
    assert run.config["nested"] == {"t": 2.0} and run.config["late"] == [1, 2]
    assert [row["epoch"] for row in run.history] == list(range(50))
    assert run.history[10]["val/acc"] == pytest.approx(0.10)
    assert run.summary["best/val_acc"] == pytest.approx(0.49)
    assert run.summary["val/acc"] == pytest.approx(0.49)  # the last logged value
    assert run.exit_code == 0


def test_file_spans_several_blocks(offline_file):
    assert offline_file.stat().st_size > 3 * BLOCK_SIZE
    assert sum(1 for _ in record_payloads(offline_file)) > 50


def test_refuses_a_file_that_is_not_a_run_file(tmp_path):
    path = tmp_path / "run-x.wandb"
    path.write_bytes(b"not a wandb file at all")
    with pytest.raises(ValueError, match="is not a W&B run file"):
        read_offline_run(path)


def test_detects_a_corrupt_chunk(offline_file, tmp_path):
    data = bytearray(offline_file.read_bytes())
    data[200] ^= 0xFF
    path = tmp_path / "run-corrupt.wandb"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt chunk"):
        read_offline_run(path)


def run_in_sweep(tmp_path: Path, overrides: list[str], sweep_name: str) -> tuple[dict, Path]:
    """Run the real pipeline in this process as job 0 of a multirun in ``sweeps/<study>/<sweep_name>``;
    return (metrics.json content, run directory)."""
    from divergence_lab.run.pipeline import train

    paths = [f"paths.output_root={tmp_path}", f"paths.teacher_cache={tmp_path / 'teachers'}"]
    cfg = compose_config([*paths, *overrides], with_hydra=True)
    sweep_dir = tmp_path / "sweeps" / cfg.study_name / sweep_name
    run_dir = sweep_dir / "0"
    run_dir.mkdir(parents=True)
    with open_dict(cfg):
        cfg.hydra.sweep.dir = str(sweep_dir)
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.mode = RunMode.MULTIRUN
        HydraConfig.instance().set_config(cfg)
        del cfg["hydra"]
    train(cfg)
    return json.loads((run_dir / "metrics.json").read_text()), run_dir


def history_values(run: OfflineRun, metric: str) -> list[float]:
    return [row[metric] for row in run.history if metric in row]


@pytest.fixture
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.slow
@pytest.mark.usefixtures("offline_wandb")
def test_distillation_run_has_flat_labels_and_its_metrics_in_the_summary(tmp_path, tiny_overrides):
    overrides = [
        "logger=wandb",
        "study_name=compare",
        "divergence=rkl",
        "divergence.temperature=2.5",
        "seed=3",
    ]
    record, run_dir = run_in_sweep(tmp_path, [*tiny_overrides, *overrides], "2026-01-02_03-04-05-000006")
    (run_file,) = offline_run_files(run_dir)
    run = read_offline_run(run_file)
    group = "compare/2026-01-02_03-04-05-000006"
    assert run.group == group
    labels = {key: value for key, value in run.config.items() if key.startswith("run/")}
    assert labels == {
        "run/study": "compare",
        "run/sweep": group,
        "run/method": "kd",
        "run/divergence": "rkl",
        "run/data": "digits",
        "run/seed": 3,
        "run/divergence/temperature": 2.5,
        "run/divergence/t_squared": True,
    }  # execution and chunk_rows say how the divergence is computed: no label, no parallel-coordinates axis
    assert run.config["divergence"]["temperature"] == 2.5  # the nested resolved config stays
    assert run.config["divergence"]["execution"] == "auto" and run.config["divergence"]["chunk_rows"] == 0
    # the job's own overrides are its command line, not the sweep's; the fingerprint is the folder's
    overrides_given = [*tiny_overrides, *overrides]
    assert run.config["job/overrides"] == run.args
    assert run.args[-len(overrides_given) :] == overrides_given
    fingerprint = json.loads((run_dir / "fingerprint.json").read_text())["sha256"]
    assert run.config["fingerprint"] == fingerprint
    assert (
        run.config["git/commit"] == record["git"]["commit"]
        and run.config["git/dirty"] == record["git"]["dirty"]
    )
    metrics = record["metrics"]
    ((teacher_key, teacher),) = json.loads((run_dir / "teacher.json").read_text()).items()
    # a clean summary: the tested checkpoint's numbers and facts, no last-logged leftovers (val/acc, epoch)
    assert {name for name in run.summary if not name.startswith("_")} == {
        *(name for name in metrics if name.startswith("test/")),
        "best/val_acc",
        "selected/val_acc",
        *("selected_epoch", "checkpoint_selection", "n_train", "n_val", "n_test"),
        *("teacher/key", "teacher/model"),
        *(f"teacher/{name.removeprefix('test/')}" for name in teacher["test_metrics"]),
    }
    assert (
        run.summary["teacher/key"] == teacher_key
        and run.summary["teacher/acc"] == teacher["test_metrics"]["test/acc"]
    )
    for name in metrics:
        if name.startswith("test/"):
            assert run.summary[name] == pytest.approx(metrics[name])
    assert run.summary["selected/val_acc"] == pytest.approx(metrics["val/acc"])
    # the checkpoint tested is the best epoch by val/acc: best/val_acc is the best over the logged epochs
    assert run.summary["best/val_acc"] == pytest.approx(metrics["val/acc"])
    assert run.summary["best/val_acc"] == pytest.approx(max(history_values(run, "val/acc")))


@pytest.mark.slow
@pytest.mark.usefixtures("offline_wandb")
def test_run_without_divergence_says_none_and_reports_its_optimized_metric(tmp_path):
    overrides = ["logger=wandb", "method=teacher", "trainer.max_epochs=2", "optimized_metric=val/nll"]
    record, run_dir = run_in_sweep(tmp_path, overrides, "teachers")
    (run_file,) = offline_run_files(run_dir)
    run = read_offline_run(run_file)
    assert run.config["run/divergence"] == "none" and run.config["run/method"] == "teacher"
    assert run.config["run/sweep"] == run.group == "teacher_digits/teachers"
    assert not [key for key in run.config if key.startswith("run/divergence/")]
    metrics = record["metrics"]
    assert run.summary["best/val_nll"] == pytest.approx(metrics["val/nll"])
    assert run.summary["best/val_nll"] == pytest.approx(min(history_values(run, "val/nll")))
    # val/acc of the epoch with the best val/nll: not necessarily the best val/acc, hence not best/val_acc
    assert run.summary["selected/val_acc"] == pytest.approx(metrics["val/acc"])
    assert run.summary["selected/val_nll"] == pytest.approx(metrics["val/nll"])
    assert "best/val_acc" not in run.summary


def test_summary_of_a_last_epoch_run_names_no_best_value():
    metrics = {"test/acc": 0.5, "val/acc": 0.4, "val/acc_new": 0.3, "train/loss": 1.0}
    assert summary_values(metrics, "val/acc_new", tested_best=False) == {
        "test/acc": 0.5,
        "selected/val_acc": 0.4,
        "selected/val_acc_new": 0.3,
    }
    assert summary_values(metrics, "val/acc", tested_best=True) == {
        "test/acc": 0.5,
        "selected/val_acc": 0.4,
        "best/val_acc": 0.4,
    }


def test_teacher_summary_names_each_teacher_by_its_key_when_there_are_several(tmp_path):
    from divergence_lab.run.loggers import teacher_summary

    assert teacher_summary(tmp_path) == {}  # no teacher.json: a run without a teacher
    one = {"model": "MLP", "test_metrics": {"test/acc": 0.9, "test/nll": 0.3}, "numerics": {}}
    (tmp_path / "teacher.json").write_text(json.dumps({"k1": one}))
    assert teacher_summary(tmp_path) == {
        "teacher/key": "k1",
        "teacher/model": "MLP",
        "teacher/acc": 0.9,
        "teacher/nll": 0.3,
    }
    other = {"model": "ResNet", "test_metrics": {"test/acc": 0.8}, "numerics": {}}
    (tmp_path / "teacher.json").write_text(json.dumps({"k2": other, "k1": one}))
    assert teacher_summary(tmp_path) == {
        "teacher/k1/key": "k1",
        "teacher/k1/model": "MLP",
        "teacher/k1/acc": 0.9,
        "teacher/k1/nll": 0.3,
        "teacher/k2/key": "k2",
        "teacher/k2/model": "ResNet",
        "teacher/k2/acc": 0.8,
    }


@pytest.mark.parametrize("selected", [2, None])
def test_epoch_figure_titles_every_panel_and_marks_the_tested_epoch(selected):
    from divergence_lab.run.epoch_figure import epoch_figure

    curves = {
        "val/nll": {1: 2.0, 2: 1.5},
        "train/loss": {1: 1.0, 2: 0.5},
        "val/acc": {1: 0.5, 2: 0.7},
        "lr": {1: 0.1},
    }
    fig = epoch_figure(curves, "kd | kl | seed 0", selected)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["train/loss", "val/acc", "val/nll"]  # lr is not drawn
    assert all(ax.get_xlabel() == "epoch" for ax in shown)
    marked = [[line.get_xdata()[0] for line in ax.get_lines()[1:]] for ax in shown]
    assert marked == ([[selected]] * 3 if selected else [[]] * 3)
    assert (shown[0].get_legend() is not None) == (selected is not None)
    assert epoch_figure({"test/acc": {1: 0.9}}, "", selected) is None  # nothing per epoch to draw
