"""Careless ``dlab`` command lines — single runs and sweeps — each refused in one line, exit 2.

Almost all are refused by the pre-flight checks before Hydra starts: then nothing at all is created on disk.
That includes the data, the networks and the method that do not fit together (the declared contracts of
``conf/data/contracts.yml``, ``conf/model/contracts.yml`` and ``method.model_families`` / ``data_tasks``)
and the values the data and network classes refuse when constructed. Only what needs the data itself (a
malformed file) is seen by the run, which leaves a new run folder with ``status.json`` = failed; earlier
results are never touched. A sweep with one such job finishes the others, writes its report naming the
failed job and ends with one error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bad_inputs.harness import BadInput, assert_refused, run_dlab_in_process, run_program, snapshot

CTS = ["experiment=cts_digits"]
OPTUNA = ["-m", "hparams_search=kd_optuna"]
EARLIER = Path("outputs/sweeps/earlier/2026-01-01_00-00-00-000000")
TABLE_ROWS = 60  # rows of the good table: enough for a stratified train/val/test split of two classes


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


def prepare_tables(cwd: Path) -> None:
    """``good.csv`` (two separable classes) and ``bad.csv`` (a row with too few fields)."""
    rows = [f"{index % 2 + 0.01 * index:.3f},{0.02 * index:.3f},{index % 2}" for index in range(TABLE_ROWS)]
    (cwd / "good.csv").write_text("\n".join(["a,b,label", *rows]) + "\n")
    (cwd / "bad.csv").write_text("a,b,label\n1,2\n3,4,1\n")


SETUPS = {
    "foreign_run": prepare_foreign_run_dir,
    "foreign_sweep": prepare_foreign_sweep_dir,
    "file_root": prepare_file_as_output_root,
    "tables": prepare_tables,
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
    BadInput("scheduler", ["method.optimizer.scheduler=cyclic"], "method.optimizer.scheduler must be one of"),
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
    BadInput(
        "ltr-fraction",
        [*CTS, "method=prune", "method.pruner=ltr", "method.ltr.prune_fraction=1.0"],
        "method.ltr.prune_fraction must be a number in (0, 1) (got 1.0)",
    ),
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
        "teacher-cache-unwritable-and-empty",
        ["paths.teacher_cache=not_a_folder/teachers"],
        "the teacher cache not_a_folder/teachers cannot be written",
        setup="file_root",
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
    # knobs where a value out of range would quietly mean something else
    BadInput(
        "gradient-clip-negative",
        ["trainer.gradient_clip_val=-1"],
        "trainer.gradient_clip_val must be null (no clipping) or a finite number >= 0",
    ),  # fmt: skip
    BadInput("accumulate-zero", ["+trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    BadInput("limit-batches-negative", ["+trainer.limit_train_batches=-3"], "trainer.limit_train_batches"),
    BadInput("temperature-inf", ["divergence.temperature=inf"], "divergence: temperature must be finite"),
    BadInput("bdkd-balance", ["method=bdkd", "method.balance=foo"], "method.balance must be one of"),
    BadInput("sinkd-weight", ["method=sinkd", "method.sinkhorn_weight=-1"], "method.sinkhorn_weight must be"),
    BadInput("rewind-negative", [*CTS, "method.rewind_epochs=-1"], "method.rewind_epochs must be an integer"),
    BadInput(
        "legogcd-backbone",
        ["experiment=legogcd_digits", "method.backbone.kind=vit"],
        "method.backbone.kind must be one of mlp, resnet_cifar",
    ),  # fmt: skip
    # intent that would be ignored: a sweep without -m, an empty folder, folders nested in each other
    BadInput("study-without-m", ["study=kd_divergences"], "run it with: dlab -m study=kd_divergences"),
    BadInput(
        "search-without-m", ["hparams_search=kd_optuna"], "run it with: dlab -m hparams_search=kd_optuna"
    ),
    BadInput("run-dir-empty", ["hydra.run.dir="], "hydra.run.dir is empty"),
    BadInput("run-dir-blank", ["hydra.run.dir='  '"], "hydra.run.dir is empty"),
    BadInput("fresh-run-dir-empty", ["ckpt_path=fresh", "hydra.run.dir="], "hydra.run.dir is empty"),
    BadInput("sweep-dir-empty", ["-m", "seed=0,1", "hydra.sweep.dir="], "hydra.sweep.dir is empty"),
    BadInput("sweep-subdir-empty", ["-m", "seed=0,1", "hydra.sweep.subdir="], "hydra.sweep.subdir is empty"),
    BadInput("run-dir-in-sweep", [f"hydra.run.dir={EARLIER}/5"], "is inside the sweep folder"),
    BadInput(
        "run-dir-in-run",
        ["hydra.run.dir=outputs/foreign_run/again"],
        "is inside the run folder",
        setup="foreign_run",
    ),  # fmt: skip
    BadInput(
        "sweep-dir-in-run",
        ["-m", "seed=0,1", "hydra.sweep.dir=outputs/foreign_run/sweep"],
        "is inside the run folder",
        setup="foreign_run",
    ),  # fmt: skip
    BadInput("run-dir-holds-sweeps", ["hydra.run.dir=outputs"], "holds the sweep folder"),
    BadInput(
        "sweep-dir-holds-sweeps", ["-m", "seed=0,1", "hydra.sweep.dir=outputs/sweeps"], "holds the sweep"
    ),
    # Hydra's own groups, and keys their class would not take
    BadInput(
        "launcher-option",
        ["-m", "hydra/launcher=nope", "seed=0,1"],
        "hydra/launcher=nope is not an option; choose one of: basic, joblib",
    ),  # fmt: skip
    BadInput("plus-key-not-taken", ["+data.source=x.csv"], "data.source is not a setting of"),
    BadInput("key-not-taken", ["data.source=x.csv"], "data.source is not a key of data nor a setting"),
    # the declared contract: data, networks and method that do not fit together
    BadInput(
        "cifar-net-on-digits", ["method=teacher", "model=resnet_cifar"], "needs images of at least 32x32"
    ),
    BadInput("lm-in-kd", ["model=lm_tiny", "method=kd"], "model=lm_tiny is a causal_lm; method=kd trains a"),
    BadInput(
        "lm-teacher-in-kd",
        ["model@method.teacher.model=lm_tiny"],
        "model@method.teacher.model=lm_tiny is a causal_lm",
    ),  # fmt: skip
    BadInput("mlp-on-text", ["data=text_synthetic"], "model=mlp takes image or vector input"),
    BadInput("bert-on-digits", ["model=bert_tiny"], "model=bert_tiny takes tokens input"),
    BadInput(
        "cnn-on-vectors", ["model=cnn", "data=synthetic"], "model=cnn takes vectors only of a square size"
    ),
    BadInput("kd-on-lm-data", ["data=lm_synthetic"], "method=kd trains on classification data"),
    BadInput(
        "lm-kd-mlp",
        ["experiment=lm_kd_synthetic", "model=mlp"],
        "model=mlp is a classifier; method=lm_kd trains a causal_lm",
    ),  # fmt: skip
    BadInput("legogcd-plain-data", ["method=legogcd"], "method=legogcd trains on category_discovery data"),
    BadInput("sweep-model-value", ["-m", "model=mlp,resnet_cifar"], "model=resnet_cifar needs images"),
    # values the data and network classes refuse, decided before any folder exists
    BadInput("data-fraction", ["data.val_fraction=0.95"], "data.val_fraction + data.test_fraction"),
    BadInput("label-noise", ["data.label_noise=1.0"], "data.label_noise must be in [0, 1)"),
    BadInput("synthetic-separation", ["data=synthetic", "data.separation=0"], "data.separation must be > 0"),
    BadInput(
        "gcd-known-classes",
        ["experiment=legogcd_digits", "data.num_known=10"],
        "data.num_known must be in [1, 9]",
    ),  # fmt: skip
    BadInput("gcd-augment", ["experiment=legogcd_digits", "data.augment=rotate"], "data.augment must be"),
    BadInput("tabular-source-kind", ["data=tabular", "data.source=table.xlsx"], "data.source: must be"),
    BadInput(
        "tabular-label-column-of-sklearn-table",
        ["data=wine", "data.label_column=species"],
        "data.label_column: names a column of a .csv source",
    ),
    BadInput(
        "cifar-no-validation",
        ["data=cifar10", "model=resnet_cifar", "method=teacher", "data.val_fraction=0"],
        "data.val_fraction=0 holds out no validation images to select the tested epoch",
    ),  # fmt: skip
    BadInput(
        "model-variant",
        ["data=cifar10", "model=resnet_cifar", "method=teacher", "model.variant=tlab2"],
        "model.variant must be one of he, tlab",
    ),  # fmt: skip
    BadInput(
        "pld-teacher-reference",
        ["experiment=pld_synthetic100", "+method.teacher_reference={acc: 1.5, source: x}"],
        "method.teacher_reference must be {acc: a top-1 accuracy in [0, 1]",
    ),  # fmt: skip
    BadInput(
        "legogcd-projector-widths",
        ["experiment=legogcd_digits", "method.backbone.projector_hidden=[64,0]"],
        "method.backbone.projector_hidden must be a list of integers >= 1 or null",
    ),  # fmt: skip
    BadInput(
        "loss-reduction",
        ["experiment=cts_digits", "method.loss_reduction=max"],
        "method.loss_reduction must be one of mean, sum",
    ),  # fmt: skip
    BadInput(
        "cifar-variant",
        ["data=cifar10", "model=resnet_cifar", "method=teacher", "data.variant=cifar20"],
        "data.variant must be one of",
    ),  # fmt: skip
    BadInput(
        "resnet-depth",
        ["data=cifar10", "model=resnet_cifar", "method=teacher", "model.depth=21"],
        "model.depth must be 6n + 2",
    ),  # fmt: skip
    BadInput("mlp-width-zero", ["model.hidden=[0]"], "model.hidden widths must be >= 1"),
    BadInput("eval-batch-size", ["data.eval_batch_size=0"], "data.eval_batch_size must be an integer >= 1"),
    BadInput("bert-heads", ["experiment=sinkd_text", "model.heads=3"], "model.hidden=64 must be a multiple"),
    BadInput(
        "lm-heads",
        ["experiment=lm_kd_synthetic", "model.sizes.n_head=3"],
        "model.sizes: a gpt2 model refuses",
    ),  # fmt: skip
    BadInput(
        "lm-too-long", ["experiment=lm_kd_synthetic", "data.digits=30"], "data.max_length=32 is shorter"
    ),
    BadInput("text-too-short", ["experiment=sinkd_text", "data.max_length=4"], "data.max_length=4 would cut"),
    BadInput("pld-weights", ["method=pld", "method.ranking.weights=foo"], "method.ranking: weights must be"),
    BadInput("sinkd-solver", ["method=sinkd", "method.sinkhorn.solver=foo"], "method.sinkhorn: solver must"),
    BadInput(
        "bdkd-divergence-name",
        ["method=bdkd", "method.divergences.forward=nope"],
        "method.divergences.forward: unknown divergence 'nope'",
    ),  # fmt: skip
    BadInput("bdkd-temperature", ["method=bdkd", "method.temperature=0"], "method.temperature must be"),
    BadInput(
        "gcd-teacher-temperature",
        ["experiment=legogcd_digits", "method.teacher_temperature=[0.07]"],
        "method.teacher_temperature must be a list of 3 items: [start, end, warm-up epochs]",
    ),  # fmt: skip
    BadInput(
        "cts-search-epochs", [*CTS, "method.search.epochs=0"], "method.search.epochs must be an integer"
    ),
    BadInput("lm-task", ["experiment=lm_kd_synthetic", "data.task=poetry"], "data.task must be one of"),
    BadInput(
        "text-class-edges",
        ["experiment=sinkd_text", "data.class_edges=[1,0]"],
        "data.class_edges must be a non-empty increasing list",
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
    "study-without-m",
    "lm-in-kd",
    "key-typo",
    "study-typo",
    "bdkd-divergence",
    "ranking-in-kd",
    "sweep-unread",
)


@pytest.mark.parametrize("case", [c for c in CASES if c.name in THROUGH_THE_CONSOLE_SCRIPT], ids=str)
def test_the_console_script_refuses_the_same_way(case, tmp_path):
    assert_refused_creating_nothing(case, tmp_path)


# refused by the run itself (only the data can tell): a run folder is made (status failed), earlier results
# stay as they were
RUN_TIME_CASES = [
    BadInput(
        "malformed-table",
        ["method=teacher", "data=tabular", "data.source=bad.csv"],
        "data.source:",
        setup="tables",
    ),  # fmt: skip
]


@pytest.mark.parametrize("case", RUN_TIME_CASES, ids=str)
def test_bad_value_seen_by_the_run_is_refused_in_one_line_and_recorded_as_failed(case, tmp_path):
    prepare_earlier_results(tmp_path)
    if case.setup:
        SETUPS[case.setup](tmp_path)
    assert_refused(case, tmp_path, tmp_path / EARLIER)
    (status,) = (tmp_path / "outputs" / "runs").glob("*/*/status.json")
    assert json.loads(status.read_text())["state"] == "failed"


def test_a_sweep_with_one_bad_job_finishes_the_others_reports_and_fails_in_one_line(tmp_path):
    """One job of three reads a malformed table: the two others finish, the end-of-sweep report is written
    and names the failed job, and dlab ends with one error line naming it, exit status non-zero."""
    prepare_tables(tmp_path)
    sweep = tmp_path / "outputs" / "sweep"
    argv = [
        "-m",
        "method=teacher",
        "data=tabular",
        "data.source=good.csv,bad.csv",
        "seed=0,1",
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_program("dlab", argv, tmp_path)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("dlab: error: ")]
    assert len(errors) == 1, result.stderr
    assert "2 of 4 jobs failed; the others finished" in errors[0], errors[0]
    assert "data.source=bad.csv" in errors[0] and "bad.csv line 2 has 2 fields" in errors[0], errors[0]
    assert result.returncode != 0
    states = {
        job.name: json.loads((job / "status.json").read_text())["state"] for job in sweep.glob("[0-9]*")
    }
    assert sorted(states.values()) == ["failed", "failed", "finished", "finished"], states
    report = (sweep / "report.md").read_text()
    failed = [name for name, state in states.items() if state == "failed"]
    assert all(f"  - {name} (failed: ConfigError: data.source:" in report for name in failed), report


def test_the_table_holds_distinct_inputs():
    commands = [tuple(case.argv) + tuple(sorted(case.env.items())) for case in CASES + RUN_TIME_CASES]
    assert len(set(commands)) == len(commands)
    assert len({case.name for case in CASES + RUN_TIME_CASES}) == len(CASES) + len(RUN_TIME_CASES)
