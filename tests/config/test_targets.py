"""A ``_target_`` that cannot be imported, or that refuses its arguments, is one line naming the key."""

import pytest
from omegaconf import OmegaConf

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.targets import instantiate_target
from tests.conftest import compose_config


def refusing(value: int) -> None:
    raise ConfigError(f"data.value must be >= 0 (got {value})")


def test_a_target_that_cannot_be_imported_names_the_key_and_the_way_to_make_it_importable():
    cfg = OmegaConf.create({"_target_": "no_such_package.data.MyDataModule"})
    with pytest.raises(ConfigError) as refused:
        instantiate_target(cfg, "data")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("data._target_: cannot import 'no_such_package.data.MyDataModule'")
    assert "PYTHONPATH" in message


def test_the_objects_own_refusal_comes_through_unchanged():
    cfg = OmegaConf.create({"_target_": f"{__name__}.refusing", "value": -1})
    with pytest.raises(ConfigError, match=r"^data.value must be >= 0 \(got -1\)$"):
        instantiate_target(cfg, "data")


def test_a_user_config_folder_adds_its_options_beside_the_packages(tmp_path, monkeypatch):
    from divergence_lab.entry.preflight import preflight

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text("defaults: [tabular]\nname: mine\nsource: sklearn:iris\n")
    monkeypatch.chdir(tmp_path)
    assert preflight(["-cd", str(tmp_path), "data=mine"]).notice is None
    assert preflight([f"hydra.searchpath=[file://{tmp_path}]", "data=mine"]).notice is None
    with pytest.raises(ConfigError, match=r"data=nope is not an option; choose one of: .*mine"):
        preflight(["-cd", str(tmp_path), "data=nope"])


@pytest.mark.parametrize(
    "overrides",
    [
        ["experiment=sinkd_glue", "model.path=/m/student", "method.teacher.model.path=/m/teacher"],
        ["experiment=lm_kd_local", "model.path=/m/s", "method.teacher.model.path=/m/t", "data.path=/d"],
    ],
)
def test_the_preflight_builds_data_whose_settings_point_elsewhere_in_the_config(overrides):
    """``data.tokenizer: ${method.teacher.model.path}`` resolves against the whole config."""
    from divergence_lab.entry.preflight import CONF_DIR, check_data_modules

    check_data_modules([compose_config(overrides)], (CONF_DIR,))
