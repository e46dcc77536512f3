"""Sweep and launcher settings are refused before a sweep starts, with one line naming the key and the value;
every shipped preset and study passes."""

import subprocess
import sys

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from divergence_lab.config.checks import CONF_DIR
from divergence_lab.entry.sweep_checks import check_sweep_settings, metric_direction
from divergence_lab.ground.errors import ConfigError
from tests.conftest import compose_config

STUDY_DIR = CONF_DIR / "study"
OPTUNA = ["hparams_search=kd_optuna"]
SLURM = ["hydra/launcher=slurm"]


def search(name: str, value: str) -> tuple[list[str], str, str]:
    """A bad case: the Optuna search dimension ``name`` set to ``value`` (a merge: names may hold dots)."""
    return [*OPTUNA, f"hydra.sweeper.params={{{name}: '{value}'}}"], f"hydra.sweeper.params.{name}", value


def setting(name: str, value: str, *more: str) -> tuple[list[str], str, str]:
    """A bad case: the Optuna study setting ``hydra.sweeper.<name>``."""
    return [*OPTUNA, f"hydra.sweeper.{name}={value}", *more], f"hydra.sweeper.{name}", value


def launcher(preset: str, name: str, value: str) -> tuple[list[str], str, str]:
    """A bad case: ``hydra.launcher.<name>`` of the launcher ``preset``."""
    return [f"hydra/launcher={preset}", f"hydra.launcher.{name}={value}"], f"hydra.launcher.{name}", value


DIRECTION = "hydra.sweeper.direction"
# (overrides, the key the message names, the bad value it shows)
BAD_SETTINGS = [
    search("method.alpha", "interval(1.0, 0.1)"),  # reversed
    search("divergence.temperature", "interval(8.0, 8.0)"),  # empty
    search("method.alpha", "interval(nan, 1.0)"),
    search("method.alpha", "interval(0.1, inf)"),
    search("method.alpha", "tag(log, interval(0, 1))"),
    search("method.alpha", "tag(log, interval(-1.0, 1.0))"),
    search("divergence.temperature", "range(5, 1)"),
    search("divergence.temperature", "range(3, 3)"),
    search("divergence.temperature", "range(5, 1, -1)"),
    search("divergence.temperature", "range(0, 10, 0)"),
    search("divergence.temperature", "range(0, nan)"),
    search("divergence", "choice()"),
    search("divergence", "choice(kl,"),
    search("divergence", "glob(*)"),
    setting("n_trials", "0"),
    setting("n_jobs", "0"),
    setting("n_jobs", "-1"),
    setting("max_failure_rate", "1.5"),
    setting("max_failure_rate", "-0.1"),
    setting("max_failure_rate", "nan"),
    setting("direction", "max"),
    (OPTUNA + ["hydra.sweeper.direction=[minimize,maximize]"], DIRECTION, "'minimize', 'maximize'"),
    setting("direction", "minimize"),  # on val/acc
    setting("direction", "minimize", "optimized_metric=val/acc_old"),
    (OPTUNA + ["optimized_metric=val/nll"], DIRECTION, "maximize"),
    (OPTUNA + ["optimized_metric=val/ece"], DIRECTION, "maximize"),
    (OPTUNA + ["optimized_metric=val/brier"], DIRECTION, "maximize"),
    (OPTUNA + ["optimized_metric=val/loss"], DIRECTION, "maximize"),
    (["hydra/sweeper=optuna"], DIRECTION, "minimize"),  # the plugin's default, on val/acc
    launcher("joblib", "n_jobs", "0"),
    launcher("slurm", "timeout_min", "0"),
    launcher("slurm_cpu", "cpus_per_task", "0"),
    launcher("slurm", "tasks_per_node", "0"),
    launcher("slurm", "nodes", "-1"),
    launcher("slurm", "array_parallelism", "0"),
    launcher("slurm", "max_num_timeout", "-1"),
    launcher("slurm", "gpus_per_node", "-1"),
    launcher("slurm", "signal_delay_s", "-5"),
    launcher("slurm", "signal_delay_s", "14400"),  # = timeout_min 240
    launcher("slurm_cpu", "signal_delay_s", "3600"),  # = timeout_min 60
    launcher("submitit_local", "timeout_min", "-3"),
    launcher("submitit_slurm", "nodes", "0"),
]


def assert_refused(cfg: DictConfig, key: str, value: str, **kwargs) -> None:
    """``check_sweep_settings`` raises a one-line ConfigError that names ``key`` and ``value``."""
    with pytest.raises(ConfigError) as error:
        check_sweep_settings(cfg, **kwargs)
    message = str(error.value)
    assert "\n" not in message
    assert key in message and value in message, message


@pytest.mark.parametrize(
    ("overrides", "key", "value"), BAD_SETTINGS, ids=[" ".join(o) for o, _, _ in BAD_SETTINGS]
)
def test_a_bad_sweep_setting_is_refused_in_one_line_naming_the_key(overrides, key, value):
    assert_refused(compose_config(overrides, with_hydra=True), key, value)


def with_untyped(cfg: DictConfig, node: str, **values) -> DictConfig:
    """``cfg`` with ``hydra.<node>`` an untyped copy holding ``values``, which compose would refuse."""
    copy = OmegaConf.to_container(cfg.hydra[node])
    copy.update(values)
    with open_dict(cfg):
        cfg.hydra[node] = OmegaConf.create(copy)
    return cfg


CAPPED_LOCAL = "hydra_plugins.divergence_lab_plugins.local_launcher.CappedLocalLauncher"


@pytest.mark.parametrize(
    ("overrides", "node", "values", "key"),
    [
        (SLURM, "launcher", {"nodes": True}, "hydra.launcher.nodes"),  # a boolean is no integer
        (SLURM, "launcher", {"timeout_min": float("nan")}, "hydra.launcher.timeout_min"),
        (SLURM, "launcher", {"cpus_per_task": 2.5}, "hydra.launcher.cpus_per_task"),
        (["hydra/launcher=joblib"], "launcher", {"n_jobs": True}, "hydra.launcher.n_jobs"),
        (OPTUNA, "sweeper", {"n_trials": True}, "hydra.sweeper.n_trials"),
        (OPTUNA, "sweeper", {"max_failure_rate": float("inf")}, "hydra.sweeper.max_failure_rate"),
        (OPTUNA, "sweeper", {"max_failure_rate": False}, "hydra.sweeper.max_failure_rate"),
        (
            ["hydra/launcher=submitit_local"],
            "launcher",
            {"_target_": CAPPED_LOCAL, "max_parallel_jobs": 0},
            "hydra.launcher.max_parallel_jobs",
        ),
    ],
)
def test_booleans_and_non_finite_numbers_are_refused_where_a_number_is_checked(overrides, node, values, key):
    cfg = with_untyped(compose_config(overrides, with_hydra=True), node, **values)
    (value,) = [v for name, v in values.items() if name != "_target_"]
    assert_refused(cfg, key, repr(value))


def test_command_line_search_dimensions_are_checked_as_the_sweeper_receives_them():
    cfg = compose_config(OPTUNA, with_hydra=True)
    check_sweep_settings(
        cfg, sweep_arguments=["divergence=kl,rkl", "seed=3", "method.alpha=interval(0.1, 0.5)"]
    )
    assert_refused(
        cfg, "method.alpha", "interval(1.0, 0.1)", sweep_arguments=["method.alpha=interval(1.0, 0.1)"]
    )


def compose_study(study: str, overrides: list[str] | None = None) -> DictConfig:
    """A study composed with its ``hydra`` node, as ``dlab -m study=<study>``."""
    return compose_config([f"study={study}", *(overrides or [])], with_hydra=True)


def test_a_basic_grid_is_only_parsed():
    """The basic sweeper expands what Hydra parses: an empty range is an empty grid, not an error here."""
    check_sweep_settings(compose_study("kd_divergences", ["hydra.sweeper.params.seed='range(5, 1)'"]))
    cfg = compose_study("kd_divergences", ["hydra.sweeper.params.seed='0,'"])
    assert_refused(cfg, "hydra.sweeper.params.seed", "0,")
    assert_refused(
        compose_study("kd_divergences"), "divergence=kl,", "kl,", sweep_arguments=["divergence=kl,"]
    )


def shipped_presets() -> list[list[str]]:
    """Every hparams_search preset and every launcher, the repository's and the plugins' own."""
    searches = [[f"hparams_search={p.stem}"] for p in sorted((CONF_DIR / "hparams_search").glob("*.yaml"))]
    repo_launchers = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))
    plugin_launchers = ["basic", "joblib", "submitit_local", "submitit_slurm"]
    launchers = [[f"hydra/launcher={name}"] for name in [*repo_launchers, *plugin_launchers]]
    return [*searches, *launchers]


@pytest.mark.parametrize("overrides", shipped_presets(), ids=" ".join)
def test_every_shipped_preset_passes(overrides):
    check_sweep_settings(compose_config(overrides, with_hydra=True))


@pytest.mark.parametrize(
    "overrides",
    [
        OPTUNA + ["hydra/launcher=slurm_cpu", "hydra.sweeper.n_jobs=8"],  # the preset's documented command
        OPTUNA + ["hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"],  # all CPUs but one
        OPTUNA + ["optimized_metric=val/nll", "hydra.sweeper.direction=minimize"],
        OPTUNA + ["hydra.sweeper.max_failure_rate=0.0", "hydra.sweeper.n_trials=1"],
        OPTUNA + ["hydra.sweeper.params={method.alpha: 'tag(log, interval(1e-4, 1e-1))'}"],
        OPTUNA + ["+hydra.sweeper.params.seed='range(1, 10, step=2)'"],
        SLURM + ["hydra.launcher.max_num_timeout=0", "hydra.launcher.signal_delay_s=0"],
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=4"],
    ],
    ids=" ".join,
)
def test_valid_edge_settings_pass(overrides):
    check_sweep_settings(compose_config(overrides, with_hydra=True))


@pytest.mark.parametrize("study", sorted(p.stem for p in STUDY_DIR.glob("*.yaml")))
def test_every_study_passes(study):
    cfg = compose_study(study)
    assert cfg.hydra.sweeper.params  # a study defines its grid
    check_sweep_settings(cfg)


def test_a_config_without_its_hydra_node_has_nothing_to_check():
    check_sweep_settings(compose_config(OPTUNA))


@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("val/acc", "maximize"),
        ("val/acc_old", "maximize"),
        ("val/teacher_acc", "maximize"),
        ("val/nll", "minimize"),
        ("val/teacher_nll", "minimize"),
        ("val/ece", "minimize"),
        ("val/brier", "minimize"),
        ("val/loss", "minimize"),
    ],
)
def test_metric_direction(metric, direction):
    assert metric_direction(metric) == direction


def test_the_module_imports_no_deep_learning_framework():
    code = (
        "import sys, divergence_lab.entry.sweep_checks; "
        "print(sorted({'torch', 'lightning', 'optuna'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
