"""The study ``kd_across_datasets``: KD divergences over datasets swept as options of ``data``, each cell of
its grid composing and validating, and reported across datasets (Friedman, critical difference)."""

import pytest
from omegaconf import OmegaConf

from divergence_lab.config.checks import CONF_DIR, validate_settings
from divergence_lab.report.across_datasets import dataset_keys
from tests.conftest import compose_config

STUDY = "kd_across_datasets"
GRID = OmegaConf.load(CONF_DIR / "study" / f"{STUDY}.yaml").hydra.sweeper.params
TABLES = {"wine": "sklearn:wine", "breast_cancer": "sklearn:breast_cancer", "iris": "sklearn:iris"}


def _values(key: str) -> list[str]:
    return str(GRID[key]).split(",")


def test_the_grid_sweeps_datasets_divergences_and_seeds():
    assert dataset_keys(list(GRID)) == ["data"]  # the report compares the divergences across datasets
    assert len(_values("data")) >= 4 and len(_values("seed")) >= 5
    assert {"kl", "rkl", "js", "tv", "hellinger"} <= set(_values("divergence"))
    cfg = compose_config([f"study={STUDY}"], with_hydra=True)
    assert cfg.study_name == STUDY and cfg.method.name == "kd"
    assert cfg.report.baseline == "kl" and cfg.report.metrics[0] == "test/acc"
    assert set(_values("divergence")) <= set(cfg.report.display_names)


@pytest.mark.parametrize("data", _values("data"))
def test_every_dataset_of_the_grid_composes_and_validates(data):
    cfg = compose_config([f"study={STUDY}", f"data={data}", "divergence=hellinger"])
    validate_settings(cfg)
    assert cfg.data.name == data and cfg.divergence.temperature == 2.0
    if data in TABLES:  # a preset of `tabular`: its settings, another source and name
        assert cfg.data._target_ == "divergence_lab.data.tabular.TabularDataModule"
        assert cfg.data.source == TABLES[data] and cfg.data.test_fraction == 0.25
