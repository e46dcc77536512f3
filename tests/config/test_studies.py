"""The named studies: a config group shipped with the package (``dlab -m study=<name>`` from any folder),
each a grid the command line can narrow, listed with the launchers by ``dlab --help``."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from divergence_lab.config.checks import CONF_DIR, validate_settings
from divergence_lab.entry.help_sections import study_description
from divergence_lab.entry.preflight import parse_command_line, swept_values
from tests.conftest import compose_config

DLAB = Path(sys.executable).parent / "dlab"
STUDY_FILES = sorted((CONF_DIR / "study").glob("*.yaml"))
PLUGIN_LAUNCHERS = ("basic", "joblib", "submitit_local", "submitit_slurm")


def study_variants() -> list[tuple[str, str]]:
    """``(study, "+<variant group>=<option>")`` for every value of a variant group swept by a study."""
    cases = []
    for path in STUDY_FILES:
        params = OmegaConf.load(path).hydra.sweeper.params
        for key, values in params.items():
            if str(key).startswith("+"):
                cases += [(path.stem, f"{key}={value}") for value in str(values).split(",")]
    return cases


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.stem)
def test_a_study_file_is_global_names_itself_and_says_what_it_studies(path):
    assert path.read_text().splitlines()[0] == "# @package _global_"
    assert study_description(path)
    cfg = compose_config([f"study={path.stem}"], with_hydra=True)
    assert cfg.study_name == path.stem
    assert cfg.hydra.sweep.dir.startswith(f"{cfg.paths.output_root}/sweeps/{path.stem}/")


def test_a_study_selects_a_preset_whose_own_overrides_apply_and_its_settings_win():
    cfg = compose_config(["study=bdkd_calibration"], with_hydra=True)
    assert cfg.hydra.runtime.choices.experiment == "bdkd_digits"
    assert cfg.method.name == "bdkd" and cfg.data.name == "digits"  # the preset's defaults list
    assert list(cfg.model.hidden) == [32] and cfg.trainer.max_epochs == 60  # the preset's values
    assert cfg.study_name == "bdkd_calibration"  # the study's value over the preset's bdkd_digits
    assert cfg.divergence.temperature == 2.0  # the study's value over the divergence group's


@pytest.mark.parametrize(("study", "variant"), study_variants(), ids="-".join)
def test_every_variant_a_study_sweeps_composes_and_validates(study, variant):
    validate_settings(compose_config([f"study={study}", variant]))


def test_the_command_line_replaces_a_study_grid_key_by_key():
    line = parse_command_line(["-m", "study=kd_divergences", "seed=0", "divergence=kl,rkl"])
    base = compose_config(["study=kd_divergences", "seed=0"], with_hydra=True)
    assert swept_values(line, base) == {"divergence": ["kl", "rkl"]}


def test_a_study_composes_from_a_folder_without_configs(tmp_path):
    shown = subprocess.run(
        [DLAB, "study=pld_ranking", "--cfg", "job"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    cfg = OmegaConf.create(shown.stdout)
    assert cfg.study_name == "pld_ranking" and cfg.data.num_classes == 100
    assert list(tmp_path.iterdir()) == []


def test_help_lists_every_study_with_its_description_and_every_launcher(tmp_path):
    own = tmp_path / "conf" / "study"
    own.mkdir(parents=True)
    (own / "my_grid.yaml").write_text("# @package _global_\n# My own grid.\nstudy_name: my_grid\n")
    helped = subprocess.run(
        [DLAB, "-cd", str(tmp_path / "conf"), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert helped.returncode == 0, helped.stderr
    lines = [line.split() for line in helped.stdout.splitlines()]
    listed = {words[0]: " ".join(words[1:]) for words in lines if words}
    for path in [*STUDY_FILES, own / "my_grid.yaml"]:
        assert listed[path.stem] == study_description(path)
    presets = [p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml")]
    for launcher in [*PLUGIN_LAUNCHERS, *presets]:
        assert listed[launcher].startswith(f"dlab -m hydra/launcher={launcher} ")


def test_the_studies_sit_in_the_top_level_sweeps_folder():
    """``sweeps/`` (beside ``conf/``, as the design card puts it) is the package's study group, which the
    wheel ships (``tests/run/test_end_to_end.py::test_wheel_ships_the_configs_and_dlab_runs_from_it``)."""
    root = Path(__file__).resolve().parents[2]
    studies = sorted(p.name for p in (root / "sweeps").glob("*.yaml"))
    assert studies == sorted(p.name for p in (CONF_DIR / "study").glob("*.yaml")) and len(studies) >= 10
    assert (root / "sweeps").resolve() == (CONF_DIR / "study").resolve()
