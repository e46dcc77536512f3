"""The declared contract of data, models and methods (``conf/data/contracts.yml``,
``conf/model/contracts.yml``, ``method.model_families`` / ``method.data_tasks``): complete, in step with the
configs, and deciding the compatibility the way the runs found it, before any stage runs."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from divergence_lab.config.checks import (
    CONF_DIR,
    DATA_CONTRACTS,
    MODEL_CONTRACTS,
    DataServes,
    check_compatibility,
    find_contract,
    hydra_group_options,
    load_contracts,
    model_refusal,
)
from divergence_lab.ground.errors import ConfigError
from tests.conftest import compose_config

INPUT_KINDS = {"image", "vector", "tokens", "text"}
TASKS = {"classification", "category_discovery", "language_modelling"}
FAMILIES = {"classifier", "sequence_classifier", "causal_lm"}


def _options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "relative"), [("data", DATA_CONTRACTS), ("model", MODEL_CONTRACTS)])
def test_every_option_declares_its_contract_and_no_declaration_is_an_option(group, relative):
    contracts = load_contracts(relative)
    assert sorted(contracts) == _options(group)
    assert "contracts" not in hydra_group_options(group)  # a .yml file: Hydra never composes it


@pytest.mark.parametrize("option", _options("data"))
def test_a_data_declaration_matches_its_config(option):
    cfg = compose_config([f"data={option}"])
    entry = load_contracts(DATA_CONTRACTS)[option]
    assert entry["target"] == cfg.data._target_
    assert entry["task"] in TASKS and entry["input_kind"] in INPUT_KINDS
    assert find_contract(load_contracts(DATA_CONTRACTS), option, cfg.data)[0] == option


@pytest.mark.parametrize("option", _options("model"))
def test_a_model_declaration_matches_its_config(option):
    cfg = compose_config([f"model={option}"])
    entry = load_contracts(MODEL_CONTRACTS)[option]
    assert entry["target"] == cfg.model._target_
    assert entry["family"] in FAMILIES and set(entry["input_kinds"]) <= INPUT_KINDS


def test_every_method_declares_the_data_it_trains_on_and_the_networks_it_reads():
    for option in _options("method"):
        method = compose_config([f"method={option}"]).method
        assert set(method.data_tasks) <= TASKS, option
        if method.reads.get("model", True):
            assert set(method.model_families) <= FAMILIES, option


@pytest.mark.parametrize(
    ("data", "shape", "classes"),
    [
        (["data=digits"], (1, 8, 8), 10),
        (["data=digits", "data.flatten=true"], (64,), 10),
        (["data=synthetic", "data.dim=7", "data.num_classes=5"], (7,), 5),
        (["data=wine"], (13,), 3),
        (["data=wine", "data.source=mine.csv"], None, None),  # the file decides
        (["data=cifar100"], (3, 32, 32), 100),
        (["data=gcd_synthetic", "data.base.dim=9"], (9,), 10),
    ],
)
def test_what_the_data_serves_is_read_from_its_declaration_and_config(data, shape, classes):
    cfg = compose_config(data)
    name, entry = find_contract(load_contracts(DATA_CONTRACTS), data[0].split("=")[1], cfg.data)
    served = DataServes(name, entry, cfg.data)
    assert (served.shape, served.classes) == (shape, classes)


def test_a_network_is_refused_for_what_it_cannot_take():
    models = load_contracts(MODEL_CONTRACTS)
    digits = DataServes("digits", load_contracts(DATA_CONTRACTS)["digits"], compose_config().data)
    assert model_refusal(models["resnet_cifar"], digits) == "needs images of at least 32x32 pixels"
    assert model_refusal(models["bert_tiny"], digits) == "takes tokens input"
    assert model_refusal(models["cnn"], digits) is None and model_refusal(models["mlp"], digits) is None


@pytest.mark.parametrize(
    "overrides",
    [[f"experiment={path.stem}"] for path in sorted((CONF_DIR / "experiment").glob("*.yaml"))]
    + [
        ["model=cnn"],
        ["data=cifar10", "model=resnet_cifar"],
        ["data=text_synthetic", "model=bert_tiny", "method=teacher"],
    ],
    ids=str,
)
def test_the_presets_fit_their_contracts(overrides):
    check_compatibility(compose_config(overrides, with_hydra=True))


def test_a_network_of_a_user_class_is_not_judged():
    cfg = compose_config(["model=resnet_cifar", "model._target_=my_package.MyNet"], with_hydra=True)
    check_compatibility(cfg)  # no declaration for my_package.MyNet: the run decides


def test_declarations_of_a_user_config_folder_add_to_the_package_ones(tmp_path):
    (tmp_path / "data").mkdir()
    declared = {"mine": {"target": "my_package.Data", "task": "language_modelling", "input_kind": "text"}}
    OmegaConf.save(OmegaConf.create(declared), tmp_path / "data" / "contracts.yml")
    cfg = compose_config(with_hydra=True)
    cfg.data._target_ = "my_package.Data"
    with pytest.raises(ConfigError, match="data=mine serves language_modelling data"):
        check_compatibility(cfg, [CONF_DIR, tmp_path])
