"""Optuna studies through the real sweeper and a real SQLite storage: continuing, failures, best.yaml."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from divergence_lab.optuna_study import rerun_command
from tests.conftest import compose_config

BIN = Path(sys.executable).parent
APP = Path(__file__).parent / "apps" / "objective.py"


def _run_toy(sweep_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOY_SWEEP_DIR": str(sweep_dir)}
    return subprocess.run(
        [sys.executable, str(APP), "-m"], capture_output=True, text=True, timeout=120, env=env
    )


def test_study_continues_across_invocations_and_survives_failed_and_nan_trials(tmp_path):
    first = _run_toy(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run_toy(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Continuing study 'toy': 4 trial(s)" in second.stdout + second.stderr
    study = optuna.load_study(study_name="toy", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [trial.state.name for trial in study.trials]
    # jobs 1, 5 raised and 2, 6 returned NaN: all recorded as failed, and the study went on
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"] * 2
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == list(range(8))
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert best["best_value"] == pytest.approx(max(t.value for t in completed))
    assert best["trials"] == {"complete": 4, "failed": 4, "total": 8}
    assert best["best_params"]["x"] == pytest.approx(study.best_params["x"])


def test_every_trial_failing_ends_with_a_clear_message(tmp_path):
    env = {**os.environ, "TOY_SWEEP_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(APP), "-m", "hydra.sweeper.n_trials=2", "+fail_all=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode != 0
    assert "no trial of study 'toy' completed: every trial failed" in result.stderr
    assert not (tmp_path / "best.yaml").exists()


def test_rerun_command_drops_the_search_and_sweeps_five_seeds():
    cfg = compose_config(
        ["hparams_search=kd_optuna", "trainer.max_epochs=3", "divergence=rkl"], with_hydra=True
    )
    task = ["hparams_search=kd_optuna", "trainer.max_epochs=3", "divergence=rkl", "seed=4"]
    cfg.hydra.overrides.task = task
    command = rerun_command(cfg, {"divergence": "js", "method.alpha": 0.25})
    assert command == (
        "dlab -m trainer.max_epochs=3 divergence=js method.alpha=0.25 study=kd_optuna_best seed=0,1,2,3,4"
    )


@pytest.mark.slow
def test_dlab_optuna_study_on_validation_metric_continues_when_rerun(tmp_path):
    command = [
        BIN / "dlab",
        "-m",
        "hparams_search=kd_optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "method.teacher.max_epochs=1",
        f"paths.output_root={tmp_path}",
    ]
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "sweeps" / "kd_optuna" / "optuna"
    study = optuna.load_study(study_name="kd_optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    for trial in study.trials:  # each trial's value is its run's best validation accuracy
        record = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert trial.value == pytest.approx(record["metrics"]["val/acc"])
        assert set(trial.params) == {"divergence", "divergence.temperature", "method.alpha"}
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["best_value"] == pytest.approx(study.best_value)
    assert "seed=0,1,2,3,4" in best["rerun"] and "hparams_search" not in best["rerun"]


def test_optimized_metric_must_be_a_validation_metric():
    from divergence_lab.config_checks import ConfigError, validate

    with pytest.raises(ConfigError, match="optimized_metric must be a validation metric"):
        validate(compose_config(["optimized_metric=test/acc"]))
