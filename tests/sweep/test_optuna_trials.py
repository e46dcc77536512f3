"""The ask/tell loop: batches of ``n_jobs`` trials through one launcher call each, outcomes told to the study;
a study keyed by its fixed settings; a continued study's sampler seed."""

import math

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution

from divergence_lab.sweep.optuna_run import seeded_sampler
from divergence_lab.sweep.optuna_space import parse_search_space
from divergence_lab.sweep.optuna_study import (
    FIXED_SETTINGS_ATTR,
    StudyError,
    fixed_settings,
    key_by_fixed_settings,
)
from divergence_lab.sweep.optuna_trials import TrialJobs, objective_value, run_trials

SPACE = parse_search_space({"x": "interval(0.0, 1.0)", "seed": "3"}, ["trainer.max_epochs=1"])


class RecordingLauncher:
    """Stands in for a Hydra launcher: records each call's batch, returns ``outcome(job number)``."""

    def __init__(self, outcome=lambda job: float(job)) -> None:
        self.calls: list[tuple[int, list[list[str]]]] = []
        self.outcome = outcome

    def __call__(self, job_overrides, first_job):
        self.calls.append((first_job, [list(o) for o in job_overrides]))
        returns = []
        for job in range(first_job, first_job + len(job_overrides)):
            value = self.outcome(job)
            status = JobStatus.FAILED if isinstance(value, Exception) else JobStatus.COMPLETED
            returns.append(JobReturn(overrides=job_overrides[0], status=status, _return_value=value))
        return returns


def new_study() -> optuna.Study:
    return optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))


def test_trials_go_to_the_launcher_in_batches_of_n_jobs_numbered_by_trial():
    study, launcher = new_study(), RecordingLauncher()
    counts = run_trials(study, SPACE, launcher, n_trials=7, n_jobs=3, max_failure_rate=0.0)
    assert [(first, len(batch)) for first, batch in launcher.calls] == [(0, 3), (3, 3), (6, 1)]
    assert (counts.launched, counts.failed) == (7, 0)
    for trial, overrides in zip(study.trials, [o for _, batch in launcher.calls for o in batch], strict=True):
        assert overrides == ["seed=3", "trainer.max_epochs=1", f"x={trial.params['x']}"]
        assert trial.value == trial.number  # each job's return went to its own trial


def test_failed_nan_and_non_numeric_trials_are_recorded_as_failed():
    outcomes = {0: 0.5, 1: RuntimeError("boom"), 2: float("nan"), 3: None, 4: "0.25"}
    study, launcher = new_study(), RecordingLauncher(outcomes.get)
    counts = run_trials(study, SPACE, launcher, n_trials=5, n_jobs=2, max_failure_rate=1.0)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL", "COMPLETE"]
    assert [study.trials[0].value, study.trials[4].value] == [0.5, 0.25]
    assert counts.failed == 3


def test_more_failures_than_max_failure_rate_stop_the_study_after_the_batch():
    study, launcher = new_study(), RecordingLauncher(lambda job: RuntimeError("boom") if job == 1 else 1.0)
    with pytest.raises(StudyError, match=r"1 of the 2 trials launched failed, more than .*=0.25"):
        run_trials(study, SPACE, launcher, n_trials=6, n_jobs=2, max_failure_rate=0.25)
    assert len(launcher.calls) == 1 and len(study.trials) == 2


def test_objective_value_takes_any_number_of_the_job():
    assert objective_value(JobReturn(status=JobStatus.COMPLETED, _return_value=3)) == 3.0
    assert math.isinf(objective_value(JobReturn(status=JobStatus.COMPLETED, _return_value=float("inf"))))


def test_a_study_is_keyed_by_its_fixed_settings():
    study = new_study()
    settings = fixed_settings(
        {"trainer.max_epochs": "trainer.max_epochs=1", "hydra.verbose": "hydra.verbose=1"}
    )
    assert settings == {"trainer.max_epochs": "trainer.max_epochs=1"}  # Hydra's own settings never key it
    key_by_fixed_settings(study, settings, "sqlite:///x.db")
    assert study.user_attrs[FIXED_SETTINGS_ATTR] == settings
    key_by_fixed_settings(study, dict(settings), "sqlite:///x.db")  # the same settings: the same study
    other = {"trainer.max_epochs": "trainer.max_epochs=2", "+extra": "+extra=on"}
    with pytest.raises(StudyError) as error:
        key_by_fixed_settings(study, other, "sqlite:///x.db")
    message = str(error.value)
    assert "\n" not in message
    assert "+extra: (not set) -> on, trainer.max_epochs: 1 -> 2" in message
    assert "another hydra.sweep.dir or hydra.sweeper.study_name" in message
    assert study.user_attrs[FIXED_SETTINGS_ATTR] == settings  # the refusal changed nothing


def first_draw(sampler: optuna.samplers.BaseSampler) -> float:
    return optuna.create_study(sampler=sampler).ask({"x": FloatDistribution(0.0, 1.0)}).params["x"]


def test_a_continued_study_seeds_its_sampler_past_the_trials_it_holds():
    config = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 0})
    assert first_draw(seeded_sampler(config, 0)) == first_draw(optuna.samplers.RandomSampler(seed=0))
    assert first_draw(seeded_sampler(config, 4)) == first_draw(optuna.samplers.RandomSampler(seed=4))
    assert first_draw(seeded_sampler(config, 4)) != first_draw(optuna.samplers.RandomSampler(seed=0))


def test_a_trial_of_several_seeds_runs_consecutive_jobs_with_consecutive_seeds_and_their_mean():
    study, launcher = new_study(), RecordingLauncher()
    jobs = TrialJobs(seeds_per_trial=2, base_seed=3)
    counts = run_trials(study, SPACE, launcher, n_trials=3, n_jobs=2, max_failure_rate=0.0, jobs=jobs)
    # trials 0-1 as jobs 0-3 in one launch, trial 2 as jobs 4-5 in the next
    assert [(first, len(batch)) for first, batch in launcher.calls] == [(0, 4), (4, 2)]
    first_batch = launcher.calls[0][1]
    assert [job[-1] for job in first_batch] == ["seed=3", "seed=4"] * 2  # the fixed seed=3 is the first
    assert all(sum(o.startswith("seed=") for o in job) == 1 for job in first_batch)
    assert [trial.value for trial in study.trials] == [0.5, 2.5, 4.5]  # the mean of jobs 2n and 2n + 1
    assert counts.launched == 3


def test_a_trial_of_a_persistent_study_tells_each_job_its_trial_and_seed_index():
    jobs = TrialJobs(seeds_per_trial=2, storage="sqlite:///study.db")
    first, second = jobs.overrides("kd", 5, ["x=0.5"])
    assert first[:2] == ["x=0.5", "seed=0"] and second[:2] == ["x=0.5", "seed=1"]
    assert "++hydra.job.env_set.DLAB_OPTUNA_TRIAL=5" in first
    assert "++hydra.job.env_set.DLAB_OPTUNA_SEED_INDEX=1" in second
    assert "++hydra.job.env_set.DLAB_OPTUNA_STORAGE='sqlite:///study.db'" in second
    assert TrialJobs(storage=None).overrides("kd", 5, ["x=0.5"]) == [["x=0.5"]]  # in memory: no channel
