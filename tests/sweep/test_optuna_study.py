"""Optuna studies through the real sweeper and a real SQLite storage: continuing, failures, best.yaml."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from divergence_lab.sweep.optuna_study import rerun_command
from tests.conftest import compose_config
from tests.sweep.toy_sweeps import OBJECTIVE, run_app, sweep_app

BIN = Path(sys.executable).parent


def _toy(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The toy Optuna app swept into ``sweep_dir``, whatever its exit code."""
    return sweep_app(OBJECTIVE, sweep_dir, *args)


def _run_toy(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_app(OBJECTIVE, sweep_dir, *args)


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="toy", storage=f"sqlite:///{sweep_dir}/optuna.db")


def test_study_continues_across_invocations_and_survives_failed_and_nan_trials(tmp_path):
    _run_toy(tmp_path)  # n_trials=4
    again = _run_toy(tmp_path)  # the study is complete: nothing to add
    assert "4 of n_trials=4 trials finished, 0 to run" in again.stdout + again.stderr
    assert len(_study(tmp_path).trials) == 4
    extended = _run_toy(tmp_path, "hydra.sweeper.n_trials=8")
    assert "4 of n_trials=8 trials finished, 4 to run" in extended.stdout + extended.stderr
    study = _study(tmp_path)
    states = [trial.state.name for trial in study.trials]
    # jobs 1, 5 raised and 2, 6 returned NaN: all recorded as failed, and the study went on
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"] * 2
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == list(range(8))
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert best["best_value"] == pytest.approx(max(t.value for t in completed))
    assert best["trials"] == {"complete": 4, "pruned": 0, "failed": 4, "total": 8}
    assert best["best_params"]["x"] == pytest.approx(study.best_params["x"])


def test_trials_left_running_by_a_stopped_invocation_are_settled(tmp_path):
    """The sweep's process died while trials 0 and 1 ran; trial 0's job finished and wrote its result."""
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="toy", storage=storage, direction="maximize")
    for _ in range(2):
        study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({"metrics": {"val/x": 0.75}}))
    result = _run_toy(tmp_path, "hydra.sweeper.n_trials=4")
    assert "Settled 2 trial(s) left running" in result.stdout + result.stderr
    trials = _study(tmp_path).trials
    # jobs 2 (NaN) and 3 ran as trials 2 and 3
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert (tmp_path / "3").is_dir() and not (tmp_path / "4").exists()
    assert trials[0].value == 0.75


def test_every_trial_failing_ends_with_a_clear_message(tmp_path):
    result = _toy(tmp_path, "hydra.sweeper.n_trials=2", "+fail_all=1")
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
        "dlab -m trainer.max_epochs=3 divergence=js method.alpha=0.25 "
        "study_name=kd_optuna_best seed=0,1,2,3,4"
    )


@pytest.mark.slow
def test_dlab_optuna_study_on_validation_metric_continues_when_rerun(tmp_path):
    command = [
        BIN / "dlab",
        "-m",
        "hparams_search=kd_optuna",
        "trainer.max_epochs=1",
        "method.teacher.max_epochs=1",
        f"paths.output_root={tmp_path}",
    ]
    for n_trials in (1, 2):  # the second invocation extends the stored study
        result = subprocess.run(
            [*command, f"hydra.sweeper.n_trials={n_trials}"], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "sweeps" / "kd_optuna" / "optuna"
    study = optuna.load_study(study_name="kd_optuna", storage=f"sqlite:///{sweep_dir}/optuna.db")
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    for trial in study.trials:  # each trial's value is its run's best validation accuracy
        record = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert trial.value == pytest.approx(record["metrics"]["val/acc"])
        assert set(trial.params) == {"divergence", "divergence.temperature", "method.alpha"}
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["best_value"] == pytest.approx(study.best_value)
    assert "seed=0,1,2,3,4" in best["rerun"] and "hparams_search" not in best["rerun"]


def test_optimized_metric_must_be_a_validation_metric():
    from divergence_lab.config.checks import validate
    from divergence_lab.ground.errors import ConfigError

    with pytest.raises(ConfigError, match="optimized_metric must be a validation metric"):
        validate(compose_config(["optimized_metric=test/acc"]))


def test_a_continuation_under_other_fixed_settings_is_refused_in_one_line(tmp_path):
    _run_toy(tmp_path, "hydra.sweeper.n_trials=1", "+extra=1")
    sweep_config = (tmp_path / "multirun.yaml").read_text()
    refused = _toy(tmp_path, "hydra.sweeper.n_trials=2", "+extra=2")
    assert refused.returncode != 0
    (line,) = [line for line in refused.stderr.splitlines() if "other fixed settings" in line]
    assert "study 'toy'" in line and "(+extra: 1 -> 2)" in line and "another hydra.sweep.dir" in line
    assert len(_study(tmp_path).trials) == 1 and not (tmp_path / "1").exists()
    assert (tmp_path / "multirun.yaml").read_text() == sweep_config
    _run_toy(tmp_path, "hydra.sweeper.n_trials=2", "+extra=1")  # the study's own settings: it goes on
    assert len(_study(tmp_path).trials) == 2


def test_n_jobs_trials_are_launched_together_through_the_launcher(tmp_path):
    result = _run_toy(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=5",
    )
    log = result.stdout + result.stderr
    batches = [
        int(line.split(" is launching ")[1].split()[0])
        for line in log.splitlines()
        if " is launching " in line
    ]
    assert batches == [2, 2, 1]
    states = [trial.state.name for trial in _study(tmp_path).trials]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]  # trial n was job n
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == list(range(5))
