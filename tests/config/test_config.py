"""Config composition and the one-line refusals of bad configuration."""

import subprocess
import sys

import pytest

from divergence_lab import divergences
from divergence_lab.config.checks import CONF_DIR, check_group_choices, chosen_groups, group_options, validate
from divergence_lab.ground.errors import ConfigError
from tests.conftest import compose_config

DLAB = [sys.executable, "-c", "from divergence_lab.entry.cli import main; main()"]


# the options whose config leaves paths to the user's files or weights required (???), and those keys
REQUIRED_VALUES = {
    "data=glue": ["data.tokenizer"],
    "data=lm_jsonl": ["data.path"],
    "data=lm_saved": ["data.path"],
    "model=bert_local": ["model.path"],
    "model=lm_local": ["model.path"],
    "experiment=lm_kd_local": ["data.path", "method.teacher.model.path", "model.path"],
    "experiment=sinkd_glue": ["method.teacher.model.path", "model.path"],
    "experiment=lm_kd_local_smoke": ["data.path", "method.teacher.model.path", "model.path"],
    "experiment=rlvr_local": ["data.path", "model.path"],
    "experiment=rlvr_local_smoke": ["data.path", "model.path"],
    "experiment=sinkd_glue_smoke": ["method.teacher.model.path", "model.path"],
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override", [f"{group}={option}" for group in chosen_groups() for option in _options(group)]
)
def test_every_option_composes_and_validates(override):
    """Options that read the user's files or weights leave their paths required (``???``): refused until
    set, naming exactly those keys; with placeholders they validate like the rest."""
    # pld is a ranking member: it only fits the method of the same name (kd refuses it)
    companions = {"divergence=pld": ["method=pld"]}.get(override, [])
    required = REQUIRED_VALUES.get(override, [])
    if required:
        with pytest.raises(ConfigError, match="required .* and not set") as refusal:
            validate(compose_config([*companions, override]))
        assert str(refusal.value).split(" is required")[0].split(" are required")[0] == ", ".join(required)
    cfg = compose_config([*companions, override, *(f"{key}=/placeholder" for key in required)])
    validate(cfg)


def test_a_ranking_member_is_refused_where_a_divergence_term_is_needed():
    with pytest.raises(ConfigError, match="divergence=pld is a ranking member; method=kd takes"):
        validate(compose_config(["divergence=pld"]))


def test_study_file_composes_with_its_grid():
    cfg = compose_config(["study=kd_divergences"], with_hydra=True)
    assert cfg.study_name == "kd_divergences"
    assert cfg.hydra.sweeper.params.divergence.split(",") == [
        "kl",
        "rkl",
        "js",
        "tv",
        "hellinger",
        "sinkhorn",
    ]
    assert cfg.method.name == "kd" and cfg.data.name == "digits"


def test_group_options_lists_the_config_folders():
    options = group_options([CONF_DIR])
    assert set(options["divergence"]) == set(divergences.names())
    assert {"digits", "synthetic"} <= options["data"]


@pytest.mark.parametrize(
    "argv",
    [
        ["divergence=rkl"],
        ["-m", "divergence=kl,rkl,js", "seed=0,1"],
        ["experiment=null"],
        ["model@method.teacher.model=cnn"],
        ["seed=3"],
    ],
)
def test_valid_choices_pass(argv):
    check_group_choices(argv)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["divergence=nope"], r"divergence=nope is not an option; choose one of: alpha, chi2, .*kl.*"),
        (["-m", "divergence=kl,nope"], "divergence=nope is not an option"),
        (["data=cifar"], "choose one of: " + ", ".join(_options("data"))),  # every data option, as shipped
        (["model@method.teacher.model=resnet9"], "model=resnet9 is not an option"),
        (
            ["-m", "study=kd_divergnces"],
            r"study=kd_divergnces is not an option; choose one of: bdkd_calibration, .*kd_divergences.* "
            r"\(did you mean study=kd_divergences\?\)$",
        ),
        (["-m", "study=null"], "study=null is not an option"),
    ],
)
def test_unknown_choices_are_refused(argv, message):
    with pytest.raises(ConfigError, match=message):
        check_group_choices(argv)


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=abc", "seed must be an integer"),
        ("seed=1.5", "seed must be an integer"),
        ("method.optimizer.lr=-0.1", r"method.optimizer.lr must be a finite number > 0 \(got -0.1\)"),
        ("method.optimizer.name=lbfgs", "method.optimizer.name must be one of adam, adamw, sgd"),
        ("method.teacher.optimizer.lr=0", "method.teacher.optimizer.lr must be a finite number > 0"),
        ("method.alpha=1.5", r"method.alpha must be a number in \[0, 1\]"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1"),
        ("divergence.temperature=-1", "divergence: temperature must be .*> 0"),
        ("divergence.temperature=0", "divergence: temperature"),
        ("ckpt_path=/no/such/file.ckpt", "ckpt_path must be null, 'auto', 'fresh' or an existing checkpoint"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, message):
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_divergence_parameter_range_is_refused():
    cfg = compose_config(["divergence=gjs", "divergence.beta=1.5"])
    with pytest.raises(ConfigError, match="divergence: .*beta"):
        validate(cfg)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["divergence=nope"], "dlab: error: divergence=nope is not an option; choose one of: alpha"),
        (["divergence.temperature=-1"], "dlab: error: divergence: temperature must be"),
        (["seed=abc"], "dlab: error: seed must be an integer"),
        (["method.optimizer.lr=-1"], "dlab: error: method.optimizer.lr must be a finite number > 0"),
    ],
)
def test_cli_refuses_in_one_line_with_nonzero_exit(tmp_path, argv, expected):
    result = subprocess.run(
        [*DLAB, *argv, f"paths.output_root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected)
    assert "Traceback" not in result.stdout + result.stderr
    if argv == ["divergence=nope"]:
        assert all(name in lines[0] for name in divergences.names())


HYDRA_RENDERED_HELP = (
    "import os, sys\n"
    "from divergence_lab.entry.help_sections import HELP_SECTIONS_VARIABLE, help_sections\n"
    "os.environ[HELP_SECTIONS_VARIABLE] = help_sections(sys.argv[1:])\n"
    "from divergence_lab.entry.cli import hydra_app\n"
    "hydra_app()\n"
)


@pytest.mark.parametrize("overrides", [[], ["experiment=lm_kd_synthetic", "divergence=rkl"]])
def test_help_is_the_text_hydra_renders_from_the_same_template(overrides, tmp_path):
    """``dlab --help`` renders the template itself (fast); Hydra's own rendering of it is the reference."""
    ours = subprocess.run(
        [*DLAB, *overrides, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    hydra = subprocess.run(
        [sys.executable, "-c", HYDRA_RENDERED_HELP, *overrides, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert ours.returncode == 0 and hydra.returncode == 0, ours.stderr + hydra.stderr
    assert "== Configuration groups ==" in ours.stdout and "divergence: alpha, chi2" in ours.stdout
    assert ours.stdout == hydra.stdout


def test_help_and_config_composition_stay_light(tmp_path):
    """``dlab --help`` lists the groups and imports no deep-learning framework or service client."""
    code = (
        "import sys\n"
        "sys.argv = ['dlab', '--help']\n"
        "from divergence_lab.entry.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('lightning', 'torch', 'ot', 'optuna', 'wandb') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "divergence: alpha, chi2" in result.stdout
    assert "HEAVY []" in result.stdout


def test_slurm_preset_reads_the_users_untracked_local_file(tmp_path):
    """conf/local/slurm.yaml (here on an extra search path) overrides the preset; slurm_cpu inherits it."""
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "slurm.yaml").write_text(
        "# @package hydra.launcher\npartition: gpu\naccount: lab\nsetup: [module load cuda]\n"
    )
    search = f"hydra.searchpath=[file://{tmp_path}]"
    launcher = compose_config(["hydra/launcher=slurm", search], with_hydra=True).hydra.launcher
    assert (launcher.partition, launcher.account, launcher.setup) == ("gpu", "lab", ["module load cuda"])
    assert launcher.gpus_per_node == 1 and launcher.qos is None
    cpu = compose_config(["hydra/launcher=slurm_cpu", search], with_hydra=True).hydra.launcher
    assert (cpu.partition, cpu.gpus_per_node, cpu.cpus_per_task) == ("gpu", None, 1)
    plain = compose_config(["hydra/launcher=slurm"], with_hydra=True).hydra.launcher
    assert plain.partition is None  # without the file: the cluster's default partition
