"""Threads from the CPUs a job may use, progress lines outside a terminal, the optimized metric as the
checkpoint criterion, and Optuna studies keyed by their fixed settings."""

from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from divergence_lab.config.checks import CONF_DIR
from divergence_lab.entry.preflight import preflight
from divergence_lab.ground.errors import ConfigError
from divergence_lab.run.threads import thread_count
from tests.conftest import compose_config, run_training

JOBLIB = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.JoblibLauncher", "n_jobs": 2})
BASIC = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)


def test_threads_follow_the_cpus_a_job_may_use(four_cpus, monkeypatch):
    cfg = compose_config()
    assert thread_count(cfg, BASIC)[0] == 4
    assert thread_count(cfg, JOBLIB)[0] == 2  # two workers share four CPUs
    assert thread_count(cfg, OmegaConf.merge(JOBLIB, {"n_jobs": -1}))[0] == 1  # one worker per CPU
    local = OmegaConf.create({"_target_": "x.CappedLocalLauncher", "max_parallel_jobs": 3})
    assert thread_count(cfg, local)[0] == 1
    ddp = compose_config(["trainer=ddp", "trainer.devices=2"])
    assert thread_count(ddp, BASIC)[0] == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert thread_count(cfg, BASIC) == (1, "1 usable CPU(s) / 1 job(s) side by side")
    assert thread_count(compose_config(["threads=3"]), JOBLIB) == (3, "threads setting")


def test_a_run_outside_a_terminal_prints_one_line_per_epoch_and_no_lightning_chatter(tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "divergence_lab.entry.cli",
            "trainer.max_epochs=2",
            "method.teacher.max_epochs=2",
            f"paths.teacher_cache={tmp_path / 'teachers'}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = (run_dir / "train.log").read_text()
    for text in (log, result.stdout + result.stderr):
        assert text.count("[train] epoch 1/2") == 1 and text.count("[train] epoch 2/2") == 1
        assert text.count("[teacher] epoch 2/2") == 1
        assert "test acc" in text and "threads:" in text
        for chatter in ("GPU available", "litmodels", "TPU available", "LOCAL_RANK"):
            assert chatter not in text
    assert "left ~" in log.split("[train] epoch 1/2")[1].splitlines()[0]


def test_the_best_checkpoint_follows_the_optimized_metric_in_its_direction(tmp_path):
    record, run_dir = run_training(
        tmp_path, ["trainer.max_epochs=4", "method.teacher.max_epochs=2", "optimized_metric=val/nll"]
    )
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    epochs = [(float(r["val/nll"]), float(r["val/acc"])) for r in rows if r.get("val/nll")]
    assert len(epochs) == 4
    best_nll, acc_at_best = min(epochs)
    assert math.isclose(record["metrics"]["val/nll"], best_nll, rel_tol=1e-6)
    assert math.isclose(record["metrics"]["val/acc"], acc_at_best, rel_tol=1e-6)


def test_an_optuna_study_folder_is_keyed_by_its_fixed_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLAB_OUTPUT_ROOT", str(tmp_path / "outputs"))
    study = ["-m", "hparams_search=kd_optuna", "trainer.max_epochs=1"]
    assert preflight(study).notice is None
    folder = tmp_path / "outputs" / "sweeps" / "kd_optuna" / "optuna"
    assert (folder / "sweep_fingerprint.json").is_file()
    extended = preflight([*study, "hydra.sweeper.n_trials=40"])  # a larger n_trials: the same study
    assert extended.notice is None
    with pytest.raises(ConfigError, match=r"holds a sweep of another config \(trainer.max_epochs: 1 -> 2\)"):
        preflight(["-m", "hparams_search=kd_optuna", "trainer.max_epochs=2"])
    with pytest.raises(ConfigError, match=r"sweep:method.alpha"):
        preflight([*study, "method.alpha=interval(0.2, 1.0)"])
    assert preflight(["-m", "hparams_search=kd_optuna", "trainer.max_epochs=2", "ckpt_path=fresh"]).notice
    assert [p.name.startswith("optuna-") for p in (folder.parent / "superseded").iterdir()] == [True]


def test_every_shipped_study_passes_the_pre_flight_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLAB_OUTPUT_ROOT", str(tmp_path / "outputs"))
    for study in sorted((CONF_DIR / "study").glob("*.yaml")):
        preflight(["-m", f"study={study.stem}"])
    assert sorted(p.name for p in (tmp_path / "outputs" / "sweeps").iterdir()) == sorted(
        p.stem for p in (CONF_DIR / "study").glob("*.yaml")
    )


def test_a_key_that_only_some_jobs_of_a_sweep_read_may_be_set_but_not_swept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DLAB_OUTPUT_ROOT", str(tmp_path / "outputs"))
    ablation = ["-m", "experiment=legogcd_digits", "method.use_ler=true,false"]
    preflight([*ablation, "method.ler_threshold=0.9"])  # the LER jobs read it
    preflight(["-m", "method=kd,bdkd", "divergence.temperature=2"])  # the KD jobs read it
    with pytest.raises(ConfigError, match="sweeping it would repeat identical runs"):
        preflight(["-m", "method=kd,bdkd", "divergence=kl,rkl"])


def test_a_folder_written_before_fingerprints_is_read_through_its_config(tmp_path):
    """A run folder from an earlier version (config.yaml, no fingerprint, no method declarations) resumes."""
    from divergence_lab.run.fingerprint import check_run_dir, fingerprint_settings

    cfg = compose_config(["divergence=rkl"])
    legacy = OmegaConf.masked_copy(cfg, [key for key in cfg if key not in ("threads", "checks")])
    for declaration in ("reads", "instead", "val_metrics", "divergence_kinds"):
        legacy.method.pop(declaration, None)
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(legacy, resolve=True))
    check_run_dir(tmp_path, fingerprint_settings(cfg))  # the same run: accepted
    with pytest.raises(ConfigError, match='divergence.name: "rkl" -> "kl"'):
        check_run_dir(tmp_path, fingerprint_settings(compose_config()))
