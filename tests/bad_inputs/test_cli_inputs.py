"""Careless ``dlab`` command lines — single runs and sweeps — each refused in one line, exit 2.

Most are refused by the pre-flight checks before Hydra starts: then nothing at all is created on disk.
The few that only the run itself can see (a data value its module refuses, a network that does not fit
the data) leave a new run folder with ``status.json`` = failed; earlier results are never touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bad_inputs.harness import BadInput, assert_refused, run_dlab_in_process, snapshot

CTS = ["experiment=cts_digits"]
OPTUNA = ["-m", "hparams_search=kd_optuna"]
EARLIER = Path("outputs/sweeps/earlier/2026-01-01_00-00-00-000000")


def prepare_earlier_results(cwd: Path) -> None:
    """A finished-looking earlier sweep under the outputs folder: the files no refusal may touch."""
    job = cwd / EARLIER / "0"
    job.mkdir(parents=True)
    (cwd / EARLIER / "multirun.yaml").write_text("hydra: {}\n")
    (job / "metrics.json").write_text(json.dumps({"metrics": {"test/acc": 0.9}, "seed": 0}))
    (job / "config.yaml").write_text("seed: 0\n")


def prepare_foreign_run_dir(cwd: Path) -> None:
    run = cwd / "outputs/foreign_run"
    run.mkdir(parents=True)
    (run / "fingerprint.json").write_text(json.dumps({"sha256": "x", "settings": {"seed": 5}}))
    (run / "metrics.json").write_text(json.dumps({"metrics": {"test/acc": 0.5}}))


def prepare_foreign_sweep_dir(cwd: Path) -> None:
    sweep = cwd / "outputs/foreign_sweep"
    sweep.mkdir(parents=True)
    settings = {"seed": 0, "sweep:divergence": "tv,hellinger"}
    (sweep / "sweep_fingerprint.json").write_text(json.dumps({"sha256": "x", "settings": settings}))


def prepare_file_as_output_root(cwd: Path) -> None:
    (cwd / "not_a_folder").write_text("a file where the outputs should go\n")


SETUPS = {
    "foreign_run": prepare_foreign_run_dir,
    "foreign_sweep": prepare_foreign_sweep_dir,
    "file_root": prepare_file_as_output_root,
}

CASES = [
    # values
    BadInput("seed-text", ["seed=abc"], "seed must be an integer"),
    BadInput("seed-float", ["seed=1.5"], "seed must be an integer"),
    BadInput("epochs-zero", ["trainer.max_epochs=0"], "trainer.max_epochs must be an integer >= 1"),
    BadInput("epochs-nan", ["trainer.max_epochs=nan"], "trainer.max_epochs must be an integer >= 1"),
    BadInput("lr-nan", ["method.optimizer.lr=nan"], "method.optimizer.lr must be a finite number > 0"),
    BadInput("lr-inf", ["method.optimizer.lr=inf"], "method.optimizer.lr must be a finite number > 0"),
    BadInput("lr-negative", ["method.optimizer.lr=-1"], "method.optimizer.lr must be a finite number > 0"),
    BadInput("weight-decay", ["method.optimizer.weight_decay=-0.1"], "method.optimizer.weight_decay"),
    BadInput("optimizer-name", ["method.optimizer.name=adamax"], "method.optimizer.name must be one of"),
    BadInput("scheduler", ["method.optimizer.scheduler=linear"], "method.optimizer.scheduler must be one of"),
    BadInput(
        "step-without-milestones",
        ["method.optimizer.scheduler=step"],
        "method.optimizer.milestones must be a non-empty list",
    ),
    BadInput("momentum", [*CTS, "method.optimizer.momentum=1.5"], "method.optimizer.momentum"),
    BadInput("alpha-range", ["method.alpha=1.5"], "method.alpha must be a number in [0, 1]"),
    BadInput("alpha-nan", ["method.alpha=nan"], "method.alpha must be a number in [0, 1]"),
    BadInput("batch-size", ["data.batch_size=0"], "data.batch_size must be an integer >= 1"),
    BadInput("teacher-epochs", ["method.teacher.max_epochs=0"], "method.teacher.max_epochs"),
    BadInput("teacher-lr", ["method.teacher.optimizer.lr=nan"], "method.teacher.optimizer.lr"),
    BadInput("density-zero", [*CTS, "method.density=0"], "method.density must be a number in (0, 1]"),
    BadInput("ltr-fraction", [*CTS, "method.ltr.prune_fraction=1.0"], "method.ltr.prune_fraction"),
    BadInput("threads-zero", ["threads=0"], "threads must be 'auto' or an integer >= 1"),
    BadInput("threads-text", ["threads=many"], "threads must be 'auto' or an integer >= 1"),
    BadInput("stage-wait-zero", ["stage_wait_s=0"], "stage_wait_s must be a number of seconds > 0"),
    BadInput("pruner-unknown", [*CTS, "method=prune", "method.pruner=best"], "method.pruner must be one of"),
    BadInput("sanity-unknown", [*CTS, "method.sanity=flip"], "method.sanity must be one of none, shuffle"),
    BadInput(
        "invert-a-mask",
        [*CTS, "method=prune", "method.pruner=synflow", "method.sanity=invert"],
        "method.sanity=invert needs a score-based pruner, not synflow",
    ),
    BadInput(
        "ler-threshold-zero",
        ["experiment=legogcd_digits", "method.ler_threshold=0"],
        "method.ler_threshold must be a number in (0, 1]",
    ),
    BadInput("ckpt-missing", ["ckpt_path=/no/such/last.ckpt"], "ckpt_path must be null, 'auto', 'fresh'"),
    BadInput("metric-test", ["optimized_metric=test/acc"], "optimized_metric must be a validation metric"),
    BadInput("metric-unlogged", ["optimized_metric=val/ece"], "optimized_metric=val/ece is not logged"),
    BadInput("metric-typo", ["optimized_metric=val/nlll"], "did you mean val/nll?"),
    # the divergence
    BadInput("temperature-negative", ["divergence.temperature=-1"], "divergence: temperature must be"),
    BadInput("temperature-nan", ["divergence.temperature=nan"], "divergence: temperature must be"),
    BadInput("temperature-tiny", ["divergence.temperature=1e-30"], "degenerate"),
    BadInput("divergence-param", ["divergence=gjs", "divergence.beta=1.5"], "divergence: "),
    BadInput("ranking-in-kd", ["divergence=pld"], "divergence=pld is a ranking member"),
    # groups and keys
    BadInput("group-option", ["divergence=nope"], "divergence=nope is not an option"),
    BadInput("model-option", ["model=transformer"], "model=transformer is not an option"),
    BadInput("key-typo", ["divergence.tempreature=2"], "did you mean divergence.temperature?"),
    BadInput("method-key-typo", ["method.alpah=0.5"], "did you mean method.alpha?"),
    BadInput("append-existing", ["+divergence.temperature=2"], "An item is already at"),
    BadInput("not-a-group", ["trainer=tpu"], "trainer=tpu is not an option"),
    BadInput("study-typo", ["-m", "study=kd_divergnces"], "did you mean study=kd_divergences?"),
    # what the sweep's report will be asked for, checked before its jobs start
    BadInput(
        "report-test", ["-m", "seed=0,1", "report.test=z"], "report.test: 'z' is not one of t, wilcoxon"
    ),
    BadInput(
        "report-effect-scalar",
        ["-m", "seed=0,1", "report.effect_of_interest=0.01"],
        "report.effect_of_interest: expected a mapping metric -> value",
    ),
    # settings the chosen method would ignore, and combinations that cannot work
    BadInput("bdkd-divergence", ["method=bdkd", "divergence=rkl"], "method=bdkd does not read divergence"),
    BadInput("teacher-divergence", ["method=teacher", "divergence=rkl"], "method=teacher does not read"),
    BadInput("pld-divergence", ["method=pld", "divergence=js"], "method=pld does not read divergence"),
    BadInput("prune-divergence", [*CTS, "method=prune", "divergence=kl"], "method=prune does not read"),
    BadInput(
        "cts-ce-divergence",
        [*CTS, "method.search.objective=ce", "divergence.temperature=2"],
        "method=cts does not read divergence",
    ),
    BadInput(
        "legogcd-model",
        ["method=legogcd", "data=gcd_digits", "model=cnn"],
        "method=legogcd does not read model",
    ),
    BadInput("gpu-without-gpu", ["trainer=gpu"], "no usable GPU"),
    BadInput(
        "local-models-unset",
        ["experiment=lm_kd_local", "trainer=cpu"],
        "data.path, method.teacher.model.path, model.path are required (??? in the config) and not set",
    ),
    BadInput(
        "glue-weights-unset",
        ["experiment=sinkd_glue", "trainer=cpu", "model.path=/models/student"],
        "method.teacher.model.path is required (??? in the config) and not set",
    ),
    BadInput(
        "dkl-form-unknown",
        ["experiment=legogcd_digits", "method.dkl_form=true_kl"],
        "method.dkl_form must be one of official_code, paper",
    ),
    BadInput(
        "dkd-warmup-negative",
        ["method=kd", "divergence=dkd", "method.divergence_warmup.dkd=-1"],
        "method.divergence_warmup.dkd must be an integer >= 0",
    ),
    BadInput("precision-unknown", ["trainer=gpu", "trainer.precision=fp8"], "trainer.precision must be"),
    BadInput("precision-fp16-cpu", ["+trainer.precision=16-mixed"], "trainer.precision=16-mixed needs a GPU"),
    # keys the method reads only in some of its settings
    BadInput(
        "prune-search-key",
        [*CTS, "method=prune", "method.search.epochs=5"],
        "method=prune does not read method.search",
    ),  # fmt: skip
    BadInput(
        "magnitude-score-batches",
        [*CTS, "method=prune", "method.score_batches=3"],
        "read only while method.pruner is snip or grasp",
    ),  # fmt: skip
    BadInput("dml-gamma", ["method=dml", "method.gamma=0.2"], "while method.balance is sigmoid_gap"),
    BadInput(
        "ler-off-threshold",
        ["experiment=legogcd_digits", "method.use_ler=false", "method.ler_threshold=0.9"],
        "read only while method.use_ler is true",
    ),  # fmt: skip
    BadInput(
        "ler-swept-threshold",
        ["-m", "experiment=legogcd_digits", "method.use_ler=true,false", "method.ler_threshold=0.8,0.9"],
        "sweeping it would repeat identical runs",
    ),  # fmt: skip
    # folders
    BadInput(
        "run-dir-foreign",
        ["hydra.run.dir=outputs/foreign_run"],
        "holds a run of another config",
        setup="foreign_run",
    ),  # fmt: skip
    BadInput(
        "output-root-file",
        [],
        "cannot write the output folder",
        setup="file_root",
        env={"DLAB_OUTPUT_ROOT": "not_a_folder/outputs"},
    ),  # fmt: skip
    # sweeps: every value of every swept key, the sweeper, the launcher, the folder
    BadInput("sweep-group-value", ["-m", "divergence=kl,nope"], "divergence=nope is not an option"),
    BadInput("sweep-seed-value", ["-m", "seed=0,abc"], "seed must be an integer"),
    BadInput("sweep-lr-value", ["-m", "method.optimizer.lr=0.1,nan"], "method.optimizer.lr"),
    BadInput("sweep-unread", ["-m", "method=kd,bdkd", "divergence=kl,rkl"], "method=bdkd does not read"),
    BadInput("sweep-temperature", ["-m", "divergence.temperature=1,0"], "divergence: temperature must be"),
    BadInput(
        "joblib-zero",
        ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0", "seed=0,1"],
        "hydra.launcher.n_jobs",
    ),  # fmt: skip
    BadInput(
        "slurm-timeout",
        ["-m", "hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=0", "seed=0,1"],
        "hydra.launcher.timeout_min",
    ),  # fmt: skip
    BadInput("optuna-reversed", [*OPTUNA, "method.alpha=interval(1.0,0.1)"], "method.alpha"),
    BadInput("optuna-trials", [*OPTUNA, "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials"),
    BadInput("optuna-direction", [*OPTUNA, "hydra.sweeper.direction=minimize"], "disagrees with"),
    BadInput("optuna-failure-rate", [*OPTUNA, "hydra.sweeper.max_failure_rate=2"], "max_failure_rate"),
    BadInput(
        "sweep-dir-foreign",
        ["-m", "divergence=kl,rkl", "hydra.sweep.dir=outputs/foreign_sweep"],
        "holds a sweep of another config",
        setup="foreign_sweep",
    ),  # fmt: skip
]


def assert_refused_creating_nothing(case: BadInput, cwd: Path, run=None) -> None:
    """Prepare the case's files, refuse it, and check that nothing at all was created or changed."""
    prepare_earlier_results(cwd)
    if case.setup:
        SETUPS[case.setup](cwd)
    everything = snapshot(cwd)
    assert_refused(case, cwd, cwd / EARLIER, run=run)
    assert snapshot(cwd) == everything  # refused before Hydra: not even a run folder was made


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_command_line_is_refused_in_one_line_and_creates_nothing(case, tmp_path, monkeypatch, capsys):
    def in_process(case: BadInput, cwd: Path):
        return run_dlab_in_process(case.argv, cwd, monkeypatch, capsys)

    # a case with its own environment (another output root) runs as a process of its own
    assert_refused_creating_nothing(case, tmp_path, run=None if case.env else in_process)


# the same contract through the installed console script, a new process each
THROUGH_THE_CONSOLE_SCRIPT = (
    "seed-text",
    "key-typo",
    "study-typo",
    "bdkd-divergence",
    "ranking-in-kd",
    "sweep-unread",
)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in THROUGH_THE_CONSOLE_SCRIPT], ids=str)
def test_the_console_script_refuses_the_same_way(case, tmp_path):
    assert_refused_creating_nothing(case, tmp_path)


# refused by the run itself: a run folder is made (status failed), earlier results stay as they were
RUN_TIME_CASES = [
    BadInput("data-fraction", ["data.val_fraction=0.95"], "data.val_fraction + data.test_fraction"),
    BadInput("cifar-net-on-digits", ["method=teacher", "model=resnet_cifar"], "model.resnet_cifar needs"),
]


@pytest.mark.parametrize("case", RUN_TIME_CASES, ids=str)
def test_bad_value_seen_by_the_run_is_refused_in_one_line_and_recorded_as_failed(case, tmp_path):
    prepare_earlier_results(tmp_path)
    assert_refused(case, tmp_path, tmp_path / EARLIER)
    (status,) = (tmp_path / "outputs" / "runs").glob("*/*/status.json")
    assert json.loads(status.read_text())["state"] == "failed"


def test_the_table_holds_distinct_inputs():
    commands = [tuple(case.argv) + tuple(sorted(case.env.items())) for case in CASES + RUN_TIME_CASES]
    assert len(set(commands)) == len(commands)
    assert len({case.name for case in CASES + RUN_TIME_CASES}) == len(CASES) + len(RUN_TIME_CASES)
