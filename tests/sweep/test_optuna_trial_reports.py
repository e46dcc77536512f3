"""Readable Optuna studies: the objective's name, per-trial attributes from the job folders, per-epoch
intermediate values with a pruner, several seeds per trial and tied best trials, through the real sweeper,
a real SQLite storage and a toy app whose per-epoch curve is known (``tests/apps/curve.py``: after epoch
``e`` of ``epochs`` its value is ``x * e / epochs + seed * 0.01``)."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from divergence_lab.config.trial_settings import check_trial_settings
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.ties import tied_best
from divergence_lab.report.command import main as report_main
from divergence_lab.run.trial_channel import TrialChannel, trial_job_numbers
from tests.sweep.toy_sweeps import CURVE, run_app, sweep_app

BIN = Path(sys.executable).parent
SEED_STEP = 0.01
EPOCHS = 3


def _curve(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return sweep_app(CURVE, sweep_dir, *args)


def _run_curve(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_app(CURVE, sweep_dir, *args)


def _storage(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir}/optuna.db"


def _study(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="curve", storage=_storage(sweep_dir))


def _enqueued(sweep_dir: Path, *xs: float) -> None:
    """A study whose first trials run ``x`` = ``xs``, in order (the sweeper asks for them first)."""
    study = optuna.create_study(study_name="curve", storage=_storage(sweep_dir), direction="maximize")
    for x in xs:
        study.enqueue_trial({"x": x})


def _value(x: float, seed: int, epoch: int = EPOCHS) -> float:
    return x * epoch / EPOCHS + seed * SEED_STEP


def _record(sweep_dir: Path, job: int) -> dict:
    return json.loads((sweep_dir / str(job) / "metrics.json").read_text())


def test_seeds_pruning_attributes_and_ties_are_recorded_on_the_study(tmp_path):
    """Trial 0 (x=0.9) starts the median; trials 1 and 3 fall behind it after epoch 1 and are pruned when
    their third seed completes epoch 1 (the launcher runs one job at a time); trial 2 ties trial 0."""
    _enqueued(tmp_path, 0.9, 0.2, 0.9, 0.5)
    result = _run_curve(tmp_path)
    study = _study(tmp_path)
    assert study.metric_names == ["val/x"]
    assert study.user_attrs["seeds_per_trial"] == 3
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    # job n * 3 + j runs seed j of trial n
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == list(range(12))
    for trial in trials:
        jobs = trial_job_numbers(trial.number, 3)
        assert trial.user_attrs["run_dirs"] == [str(tmp_path / str(job)) for job in jobs]
        assert trial.user_attrs["seeds"] == [0, 1, 2]
        for job, short in zip(jobs, trial.user_attrs["fingerprints"], strict=True):
            full = json.loads((tmp_path / str(job) / "fingerprint.json").read_text())["sha256"]
            assert short == full[:12]
    complete = trials[0]
    per_seed = [_value(0.9, seed) for seed in range(3)]
    assert complete.value == pytest.approx(sum(per_seed) / 3)
    assert complete.user_attrs["val/x"] == pytest.approx(complete.value)
    assert complete.user_attrs["val/x per seed"] == pytest.approx(per_seed)
    assert complete.user_attrs["val/x std"] == pytest.approx(SEED_STEP)
    assert complete.user_attrs["test/x"] == pytest.approx(2 * complete.value)
    assert "pruned at epoch" not in complete.user_attrs
    assert complete.intermediate_values == pytest.approx(
        {epoch: sum(_value(0.9, seed, epoch) for seed in range(3)) / 3 for epoch in range(1, EPOCHS + 1)}
    )
    pruned = trials[1]
    # seeds 0 and 1 ran before seed 2 reached epoch 1: only then was the trial's epoch-1 mean known
    assert pruned.intermediate_values == pytest.approx({1: sum(_value(0.2, s, 1) for s in range(3)) / 3})
    assert pruned.value == pytest.approx(pruned.intermediate_values[1])
    assert pruned.user_attrs["pruned at epoch"] == [None, None, 1]
    assert _record(tmp_path, 5)["pruned"] == {"at_epoch": 1}
    assert "pruned" not in _record(tmp_path, 3)
    assert pruned.user_attrs["val/x per seed"] == pytest.approx(
        [_value(0.2, 0), _value(0.2, 1), _value(0.2, 2, epoch=1)]
    )
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["best_trials"] == [0, 2] and best["best_trial"] == 0
    assert best["trials"] == {"complete": 2, "pruned": 2, "failed": 0, "total": 4}
    assert best["seeds_per_trial"] == 3
    log = result.stdout + result.stderr
    assert "Trials 0, 2 are tied for the best val/x" in log
    assert "uses trial 0, the lowest-numbered at the best value" in log


def test_trials_within_the_tie_tolerance_are_tied_in_best_yaml_and_in_the_report(tmp_path):
    """x = 0.9 and 0.9005 differ by 0.0005 on every seed, within tie_tolerance=0.001; 0.2 is far behind."""
    _enqueued(tmp_path, 0.9, 0.2, 0.9005)
    args = ["hydra.sweeper.n_trials=3", "hydra.sweeper.seeds_per_trial=2", "hydra.sweeper.pruner=none"]
    _run_curve(tmp_path, *args, "hydra.sweeper.tie_tolerance=0.001")
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    # the best value is trial 2's; trial 0 is tied with it, listed, and not taken for the best
    assert best["best_trials"] == [0, 2] and best["best_trial"] == 2 and best["tie_tolerance"] == 0.001
    assert best["best_value"] == pytest.approx(0.9055)
    assert best["best_params"] == {"x": 0.9005} and "x=0.9005 " in best["rerun"]
    assert report_main([str(tmp_path), "--metrics", "test/x"]) == 0
    section = (tmp_path / "report.md").read_text().split("## Search")[1].split("\n## ")[0]
    assert "- Best val/x: 0.9055 ± 0.0071 over 2 seeds (0.9005)" in section
    assert (
        "- Tied with it (within hydra.sweeper.tie_tolerance=0.001): 0.9050 ± 0.0071 over 2 seeds (0.9)"
        in (section)
    )
    assert "Pruned" not in section


def test_a_pruned_trial_stops_every_seed_running_side_by_side(tmp_path):
    """joblib runs a trial's 3 seeds at once: after trial 1 is pruned, each of its seeds stops at the end
    of its current epoch, long before its last one."""
    _enqueued(tmp_path, 0.9, 0.2)
    _run_curve(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=3",
        "hydra.sweeper.n_trials=2",
        "epochs=12",
        "epoch_s=0.4",
    )
    complete, pruned = _study(tmp_path).trials
    assert (complete.state.name, pruned.state.name) == ("COMPLETE", "PRUNED")
    assert len(complete.intermediate_values) == 12
    stopped = pruned.user_attrs["pruned at epoch"]
    assert all(epoch is not None and epoch < 12 for epoch in stopped), stopped
    for job, epoch in zip(trial_job_numbers(1, 3), stopped, strict=True):
        assert _record(tmp_path, job)["pruned"] == {"at_epoch": epoch}
    # every epoch a pruned seed reported was reported by all three before the mean was written
    assert set(pruned.intermediate_values) <= set(range(1, min(stopped) + 1))


def test_a_stopped_study_of_several_seeds_settles_its_trials_from_their_job_folders(tmp_path):
    """The sweep's process died while trials 0 and 1 ran: trial 0's three jobs (folders 0-2) finished,
    trial 1's (3-5) only one; the study goes on with trial 2 in folders 6-8."""
    study = optuna.create_study(study_name="curve", storage=_storage(tmp_path), direction="maximize")
    study.set_user_attr("seeds_per_trial", 3)
    for _ in range(2):
        study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    for job, value in {0: 0.5, 1: 0.6, 2: 0.7, 3: 0.1}.items():
        (tmp_path / str(job)).mkdir()
        (tmp_path / str(job) / "metrics.json").write_text(
            json.dumps({"metrics": {"val/x": value}, "seed": job % 3})
        )
    result = _run_curve(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=none")
    assert "Settled 2 trial(s) left running" in result.stdout + result.stderr
    trials = _study(tmp_path).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[0].value == pytest.approx(0.6)
    assert trials[0].user_attrs["val/x per seed"] == pytest.approx([0.5, 0.6, 0.7])
    assert trials[1].user_attrs["val/x per seed"] == [0.1, None, None]
    assert trials[2].user_attrs["run_dirs"] == [str(tmp_path / str(job)) for job in (6, 7, 8)]
    assert (tmp_path / "8").is_dir() and not (tmp_path / "9").exists()


def test_continuing_a_study_with_other_seeds_per_trial_is_refused_in_one_line(tmp_path):
    _run_curve(tmp_path, "hydra.sweeper.n_trials=1", "hydra.sweeper.pruner=none")
    refused = _curve(tmp_path, "hydra.sweeper.n_trials=2", "hydra.sweeper.seeds_per_trial=2")
    assert refused.returncode != 0
    (line,) = [line for line in refused.stderr.splitlines() if "seed(s) per trial" in line]
    assert "study 'curve'" in line and "runs 3 seed(s) per trial, not 2" in line
    assert "hydra.sweeper.seeds_per_trial=3" in line
    assert len(_study(tmp_path).trials) == 1 and not (tmp_path / "3").exists()


def test_a_searched_seed_with_several_seeds_per_trial_is_refused_before_any_job(tmp_path):
    refused = _curve(tmp_path, "seed=choice(0, 1)")
    assert refused.returncode != 0
    assert "seed is searched, but hydra.sweeper.seeds_per_trial=3" in refused.stderr
    assert not (tmp_path / "0").exists()


def test_a_bad_pruner_is_refused_in_one_line_before_any_job_runs(tmp_path):
    result = subprocess.run(
        [
            BIN / "dlab",
            "-m",
            "hparams_search=kd_optuna",
            "hydra.sweeper.pruner=medain",
            f"paths.output_root={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dlab: error: hydra.sweeper.pruner must be one of none, median, hyperband (got 'medain')"
    ]
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"pruner": "median", "pruners": {"median": {"n_startup_trials": -1}}, "storage": "sqlite:///x.db"},
         "hydra.sweeper.pruners.median.n_startup_trials must be an integer >= 0 (got -1)"),
        ({"pruner": "hyperband", "pruners": {"hyperband": {"reduction_factor": 1}}, "storage": "sqlite:///x"},
         "hydra.sweeper.pruners.hyperband.reduction_factor must be an integer >= 2 (got 1)"),
        ({"pruner": "median", "storage": None}, "hydra.sweeper.pruner=median needs a study the jobs"),
        ({"seeds_per_trial": 0}, "hydra.sweeper.seeds_per_trial must be an integer >= 1 (got 0)"),
        ({"seeds_per_trial": None}, "hydra.sweeper.seeds_per_trial must be an integer >= 1 (got None)"),
        ({"pruner": "median", "pruners": {"median": {"n_warmup_steps": None}}, "storage": "sqlite:///x"},
         "hydra.sweeper.pruners.median.n_warmup_steps must be an integer >= 0 (got None)"),
        ({"tie_tolerance": -0.1}, "hydra.sweeper.tie_tolerance must be a number >= 0 (got -0.1)"),
    ],
)  # fmt: skip
def test_bad_pruning_seed_and_tie_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(ConfigError) as error:
        check_trial_settings(settings)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tied_best_keeps_every_candidate_within_the_tolerance_in_order():
    values = {3: 0.5, 1: 0.9, 2: float("nan"), 0: 0.9, 4: 0.89}
    assert tied_best(values, maximize=True) == [1, 0]
    assert tied_best(values, maximize=True, tolerance=0.02) == [1, 0, 4]
    assert tied_best(values, maximize=False) == [3]
    assert tied_best({0: float("nan")}, maximize=True) == []


def test_a_trial_channel_survives_hydra_s_override_grammar():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    channel = TrialChannel("sqlite:////tmp/it's a dir/optuna.db", "kd's study", 7, 2, 3)
    parsed = OverridesParser.create().parse_overrides(channel.env_overrides())
    environ = {override.key_or_group.rsplit(".", 1)[1]: str(override.value()) for override in parsed}
    assert all(override.key_or_group.startswith("hydra.job.env_set.") for override in parsed)
    assert TrialChannel.from_env(environ) == channel
    assert TrialChannel.from_env({}) is None


@pytest.mark.slow
def test_dlab_study_of_three_seeds_per_trial_with_a_median_pruner(tmp_path):
    """A real training search of 2 trials of 3 seeds, 2 epochs each: trial 1 (learning rate 1e-7) falls
    behind trial 0 after epoch 1 and is pruned once its third seed has reported epoch 1."""
    sweep_dir = tmp_path / "sweeps" / "kd_optuna" / "optuna"
    sweep_dir.mkdir(parents=True)
    storage = f"sqlite:///{sweep_dir}/optuna.db"
    study = optuna.create_study(study_name="kd_optuna", storage=storage, direction="maximize")
    fixed = {"divergence": "kl", "divergence.temperature": 4.0, "method.alpha": 0.5}
    for lr in (0.003, 1e-7):
        study.enqueue_trial({**fixed, "method.optimizer.lr": lr})
    command = [
        BIN / "dlab",
        "-m",
        "hparams_search=kd_optuna",
        "trainer.max_epochs=2",
        "method.teacher.max_epochs=1",
        f"paths.output_root={tmp_path}",
        "method.optimizer.lr=choice(0.003, 1e-7)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.seeds_per_trial=3",
        "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruners.median.n_startup_trials=1",
        "hydra.sweeper.pruners.median.n_warmup_steps=0",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="kd_optuna", storage=storage)
    assert study.metric_names == ["val/acc"]
    complete, pruned = study.trials
    assert (complete.state.name, pruned.state.name) == ("COMPLETE", "PRUNED")
    records = [_record(sweep_dir, job) for job in range(6)]
    assert [record["seed"] for record in records] == [0, 1, 2] * 2
    per_seed = [record["metrics"]["val/acc"] for record in records[:3]]
    assert complete.value == pytest.approx(sum(per_seed) / 3)
    assert set(complete.intermediate_values) == {1, 2}
    assert complete.user_attrs["val/acc per seed"] == pytest.approx(per_seed)
    assert complete.user_attrs["test/acc per seed"] == pytest.approx(
        [r["metrics"]["test/acc"] for r in records[:3]]
    )
    # the pruned seed still tested its selected checkpoint and wrote its record
    assert [record.get("pruned") for record in records[3:]] == [None, None, {"at_epoch": 1}]
    assert records[5]["selected_epoch"] == 1 and "test/acc" in records[5]["metrics"]
    assert pruned.user_attrs["pruned at epoch"] == [None, None, 1]
    assert set(pruned.intermediate_values) == {1}
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    assert best["best_trials"] == [0] and best["trials"]["pruned"] == 1 and best["seeds_per_trial"] == 3


def test_an_optuna_study_of_several_seeds_per_trial_counts_its_jobs(tmp_path):
    from divergence_lab.report.job_status import sweep_size

    sweeper = "    _target_: x.ResumableOptunaSweeper\n    n_trials: 4\n    seeds_per_trial: 3\n"
    (tmp_path / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n{sweeper}")
    assert sweep_size(tmp_path) == 12


def test_the_pruner_is_built_from_the_sweeper_s_name_and_settings():
    from divergence_lab.run.optuna_pruners import build_pruner

    pruners = {"median": {"n_startup_trials": 2, "n_warmup_steps": 3}, "hyperband": {"reduction_factor": 4}}
    median = build_pruner({"pruner": "median", "pruners": pruners})
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert (median._n_startup_trials, median._n_warmup_steps) == (2, 3)
    hyperband = build_pruner({"pruner": "hyperband", "pruners": pruners})
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner) and hyperband._reduction_factor == 4
    assert isinstance(build_pruner({}), optuna.pruners.NopPruner)
