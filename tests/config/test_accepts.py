"""The methods' declared vocabularies (``accepts:`` in ``conf/method/*.yaml``) and their one generic check.

The rules are checked one kind at a time (a value kept, a value refused with its one line), a malformed
block is refused naming the rule, every shipped method's block is well-formed and its own settings keep it,
and a method that lives outside the package (one module and one YAML in the user's folders) trains and has
its declared vocabulary checked before anything runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from divergence_lab.config.accepts import check_accepts, declared_rules, describe, malformed, violation
from divergence_lab.config.checks import CONF_DIR
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.record_format import RUN_FINGERPRINT_FILE
from divergence_lab.run.fingerprint import fingerprint_settings
from tests.conftest import compose_config

DLAB = Path(sys.executable).parent / "dlab"
METHODS = sorted(path.stem for path in (CONF_DIR / "method").glob("*.yaml"))
EXPERIMENTS = sorted(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
WITHOUT_VOCABULARY = ("teacher",)  # cross-entropy alone: every setting it has is checked generically
WEIGHTS = {"type": "number", "ge": 0}
FRACTION = {"type": "number", "gt": 0, "le": 1}
TEMPERATURES = {
    "type": "list",
    "about": "[start, end, warm-up epochs]",
    "items": [{"type": "number", "gt": 0}, {"type": "number", "gt": 0}, {"type": "integer", "ge": 0}],
}


@pytest.mark.parametrize(
    "rule, value",
    [
        ({"choices": ["mean", "sum"]}, "sum"),
        ({"choices": ["auto", True, False]}, False),
        ({"type": "boolean"}, True),
        ({"type": "integer", "ge": 1}, 1),
        ({"type": "integer", "ge": 0, "le": 3}, 3),
        (FRACTION, 1.0),
        (FRACTION, 1),  # an integer is a number
        (WEIGHTS, 0.0),
        ({"type": "number", "gt": 0, "lt": 1}, 0.5),
        ({"type": "string"}, "text"),
        ({"type": "integer", "ge": 1, "nullable": True}, None),
        ({"type": "list", "min_length": 1, "items": {"type": "integer", "ge": 1}}, [256, 128]),
        ({"type": "list", "items": {"type": "integer", "ge": 1}, "nullable": True}, []),
        ({"type": "list", "length": 2}, ["a", 1]),
        (TEMPERATURES, [0.07, 0.04, 30]),
        ({"type": "mapping", "values": {"type": "integer", "ge": 0}}, {"dkd": 20, "kl": 0}),
    ],
)
def test_a_value_within_its_rule_is_kept(rule, value):
    assert malformed(rule, "key") is None
    assert violation(rule, value, "method.key") is None


@pytest.mark.parametrize(
    "rule, value, message",
    [
        ({"choices": ["mean", "sum"]}, "max", "method.key must be one of mean, sum (got 'max')"),
        ({"choices": ["auto", True, False]}, 1, "method.key must be one of auto, true, false (got 1)"),
        ({"choices": ["a", "b"], "nullable": True}, "c", "method.key must be one of a, b, null (got 'c')"),
        ({"type": "boolean"}, "yes", "method.key must be true or false (got 'yes')"),
        ({"type": "integer", "ge": 1}, 0, "method.key must be an integer >= 1 (got 0)"),
        ({"type": "integer", "ge": 1}, 2.5, "method.key must be an integer >= 1 (got 2.5)"),
        ({"type": "integer", "ge": 1}, True, "method.key must be an integer >= 1 (got True)"),
        ({"type": "integer", "ge": 0, "le": 3}, 4, "method.key must be an integer in [0, 3] (got 4)"),
        (FRACTION, 0, "method.key must be a number in (0, 1] (got 0)"),
        (FRACTION, float("nan"), "method.key must be a number in (0, 1] (got nan)"),
        ({"type": "number", "gt": 0, "lt": 1}, 1.0, "method.key must be a number in (0, 1) (got 1.0)"),
        (WEIGHTS, -1, "method.key must be a finite number >= 0 (got -1)"),
        ({"type": "number", "gt": 0}, float("inf"), "method.key must be a finite number > 0 (got inf)"),
        ({"type": "number", "lt": 2.5}, 3, "method.key must be a finite number < 2.5 (got 3)"),
        ({"type": "string"}, 3, "method.key must be a string (got 3)"),
        ({"type": "integer", "ge": 1}, None, "method.key must be an integer >= 1 (got None)"),
        (
            {"type": "integer", "ge": 1, "nullable": True},
            0,
            "method.key must be an integer >= 1 or null (got 0)",
        ),
        (
            {"type": "list", "min_length": 1, "items": {"type": "integer", "ge": 1}},
            [64, 0],
            "method.key must be a non-empty list of integers >= 1 (got [64, 0])",
        ),
        (
            {"type": "list", "min_length": 1, "items": {"type": "integer", "ge": 1}},
            [],
            "method.key must be a non-empty list of integers >= 1 (got [])",
        ),
        ({"type": "list", "min_length": 2}, [1], "method.key must be a list of at least 2 items (got [1])"),
        ({"type": "list", "length": 2}, [1, 2, 3], "method.key must be a list of 2 items (got [1, 2, 3])"),
        ({"type": "list"}, "wide", "method.key must be a list (got 'wide')"),
        (
            TEMPERATURES,
            [0.07],
            "method.key must be a list of 3 items: [start, end, warm-up epochs] (got [0.07])",
        ),
        (TEMPERATURES, [0.07, 0.04, 2.5], "method.key[2] must be an integer >= 0 (got 2.5)"),
        (
            {"type": "list", "items": [{"type": "number", "gt": 0, "about": "the start"}]},
            [-1],
            "method.key[0] must be a finite number > 0: the start (got -1)",
        ),
        (
            {"type": "mapping", "values": {"type": "integer", "ge": 0}},
            {"dkd": -1},
            "method.key.dkd must be an integer >= 0 (got -1)",
        ),
        (
            {"type": "mapping", "values": {"type": "integer", "ge": 0}},
            [1],
            "method.key must be a mapping whose values are integers >= 0 (got [1])",
        ),
    ],
)
def test_a_value_outside_its_rule_is_refused_in_one_line(rule, value, message):
    assert malformed(rule, "key") is None
    assert violation(rule, value, "method.key") == message


@pytest.mark.parametrize(
    "rule, message",
    [
        ("mean", "method.accepts.key is malformed: a rule is a mapping of type, choices"),
        (
            {"type": "number", "minimum": 0},
            "method.accepts.key is malformed: unknown field 'minimum'; a rule",
        ),
        ({"type": "float"}, "method.accepts.key is malformed: type must be one of boolean, integer, number"),
        ({"ge": 0}, "method.accepts.key is malformed: a rule needs a type or choices"),
        ({"choices": []}, "method.accepts.key is malformed: choices must be a non-empty list"),
        ({"choices": ["a", None]}, "method.accepts.key is malformed: choices must be plain values"),
        ({"type": "integer", "choices": [1, "two"]}, "the choice 'two' is not of type integer"),
        ({"type": "string", "ge": 1}, "method.accepts.key is malformed: ge bounds an integer or a number"),
        ({"type": "number", "ge": 0, "gt": 0}, "give one lower bound (ge or gt) and one upper"),
        ({"type": "number", "le": "one"}, "le must be a finite number (got 'one')"),
        ({"type": "integer", "nullable": "yes"}, "nullable must be true or false (got 'yes')"),
        ({"type": "integer", "length": 3}, "length is the length of a list, not of type integer"),
        ({"type": "list", "min_length": -1}, "min_length must be an integer >= 0 (got -1)"),
        ({"type": "mapping", "items": {"type": "integer"}}, "items are those of a list, not of type mapping"),
        ({"type": "list", "items": []}, "items must be a rule, or a non-empty list of rules"),
        ({"type": "list", "length": 2, "items": [{"type": "integer"}]}, "items given by position fix"),
        (
            {"type": "list", "items": {"type": "integer", "gt": "0"}},
            "method.accepts.key.items is malformed: gt must be a finite number (got '0')",
        ),
        (
            {"type": "list", "items": [{"type": "integer"}, {"tipe": "integer"}]},
            "method.accepts.key.items[1] is malformed: unknown field 'tipe'",
        ),
        ({"type": "integer", "values": {"type": "integer"}}, "values are those of a mapping, not of type"),
        ({"type": "integer", "about": ""}, "about must be a few words"),
    ],
)
def test_a_malformed_rule_is_refused_naming_it(rule, message):
    refusal = malformed(rule, "key")
    assert refusal is not None and message in refusal and "\n" not in refusal


def test_a_malformed_block_is_refused_before_any_value_is_checked():
    method = OmegaConf.create({"name": "toy", "lr": -1, "accepts": {"lr": {"type": "number", "gt": "0"}}})
    with pytest.raises(ConfigError, match=r"^method.accepts.lr is malformed: gt must be a finite number"):
        check_accepts(method)
    with pytest.raises(ConfigError, match=r"^method.accepts must map settings of the method to rules"):
        check_accepts(OmegaConf.create({"name": "toy", "accepts": ["lr"]}))
    typo = OmegaConf.create({"name": "toy", "lr": 1, "accepts": {"lrr": {"type": "number"}}})
    with pytest.raises(ConfigError, match=r"^method.accepts.lrr names no setting of method=toy"):
        check_accepts(typo)


def test_a_method_without_a_block_has_nothing_declared():
    assert declared_rules(OmegaConf.create({"name": "toy", "lr": 1})) == {}
    check_accepts(OmegaConf.create({"name": "toy", "lr": 1}))


def test_a_setting_the_method_does_not_read_is_not_checked():
    method = OmegaConf.create({"name": "toy", "gamma": -1, "accepts": {"gamma": {"type": "number", "gt": 0}}})
    check_accepts(method, is_read=lambda key: key != "gamma")
    with pytest.raises(ConfigError, match=r"^method.gamma must be a finite number > 0 \(got -1\)$"):
        check_accepts(method)


@pytest.mark.parametrize("option", METHODS)
def test_every_method_block_is_well_formed_and_its_own_settings_keep_it(option):
    method = compose_config([f"method={option}"]).method
    rules = declared_rules(method)
    assert bool(rules) == (option not in WITHOUT_VOCABULARY)
    check_accepts(method)  # unread settings too: every default keeps its rule
    assert all(describe(rule) for rule in rules.values())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_keeps_its_methods_vocabulary(experiment):
    check_accepts(compose_config([f"experiment={experiment}"]).method)


def test_a_yaml_that_inherits_another_adds_to_its_block():
    kd, sinkd = (set(declared_rules(compose_config([f"method={m}"]).method)) for m in ("kd", "sinkd"))
    assert kd < sinkd and {"sinkhorn_weight", "sinkhorn_reduction"} <= sinkd - kd
    prune, cts = (declared_rules(compose_config([f"method={m}"]).method) for m in ("prune", "cts"))
    assert prune == cts


def test_the_declared_choices_are_those_the_code_implements():
    from divergence_lab.methods.bdkd import BALANCE_RULES
    from divergence_lab.methods.legogcd import DKL_FORMS

    bdkd = declared_rules(compose_config(["method=bdkd"]).method)
    legogcd = declared_rules(compose_config(["method=legogcd"]).method)
    assert tuple(bdkd["balance"]["choices"]) == BALANCE_RULES
    assert tuple(legogcd["dkl_form"]["choices"]) == DKL_FORMS


@pytest.mark.parametrize("option", ["kd", "legogcd", "prune"])
def test_the_block_changes_no_fingerprint(option):
    cfg = compose_config([f"method={option}"])
    settings = fingerprint_settings(cfg, content=False)
    assert not any(key.startswith("method.accepts") for key in settings)
    cfg.method.accepts = {}
    assert fingerprint_settings(cfg, content=False) == settings


def test_pruning_refuses_linear_steps_per_optimiser_step():
    from divergence_lab.config.checks import validate_settings

    overrides = ["experiment=cts_digits", "method.optimizer.scheduler=linear"]
    with pytest.raises(ConfigError, match=r"^method.optimizer.scheduler must be one of none, cosine, step: "):
        validate_settings(compose_config(overrides), overrides)


# --- a method and a data option from the user's own folders ------------------------------------------------

TOY_METHOD = """\
\"\"\"A method outside the package: cross-entropy with label smoothing.\"\"\"

import torch.nn.functional as F

from divergence_lab.methods.classifier import ClassifierModule
from divergence_lab.models import build_network


class LabelSmoothing(ClassifierModule):
    def __init__(self, *args, smoothing, **kwargs):
        super().__init__(*args, **kwargs)
        self.smoothing = smoothing

    def losses(self, x, y):
        loss = F.cross_entropy(self(x), y, label_smoothing=self.smoothing)
        return {"loss": loss, "ce": loss.detach()}


def build(cfg, datamodule, outputs):
    net = build_network(cfg.model, datamodule)
    return LabelSmoothing(
        net, datamodule.num_classes, dict(cfg.method.optimizer), cfg.trainer.max_epochs,
        smoothing=cfg.method.smoothing,
    )
"""

TOY_YAML = """\
name: toy
builder: toy_method.build
uses_divergence: false
reads:
  model: true
  divergence: false
model_families: [classifier]
data_tasks: [classification]
val_metrics: [val/acc, val/nll]
accepts:
  smoothing: {type: number, ge: 0, lt: 1}
smoothing: 0.1
optimizer:
  name: adam
  lr: 3.0e-3
  weight_decay: 0.0
  scheduler: none
"""


@pytest.fixture
def user_folders(tmp_path: Path) -> dict[str, Path]:
    """A config folder with ``method/toy.yaml`` and ``data/my_digits.yaml`` (a copy of the embedded digits
    under another name), and a code folder with ``toy_method.py``."""
    configs, code = tmp_path / "configs", tmp_path / "code"
    (configs / "method").mkdir(parents=True)
    (configs / "data").mkdir()
    code.mkdir()
    (configs / "method" / "toy.yaml").write_text(TOY_YAML)
    digits = (CONF_DIR / "data" / "digits.yaml").read_text().replace("name: digits", "name: my_digits")
    (configs / "data" / "my_digits.yaml").write_text(digits)
    (code / "toy_method.py").write_text(textwrap.dedent(TOY_METHOD))
    return {"configs": configs, "code": code, "work": tmp_path}


def _dlab(folders: dict[str, Path], *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": str(folders["code"]),
        "DLAB_OUTPUT_ROOT": str(folders["work"] / "outputs"),
    }
    env.pop("HYDRA_FULL_ERROR", None)
    command = [str(DLAB), "method=toy", f"hydra.searchpath=[file://{folders['configs']}]", *overrides]
    return subprocess.run(command, cwd=folders["work"], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_method_and_a_data_option_of_the_users_own_train(user_folders):
    result = _dlab(user_folders, "data=my_digits", "trainer.max_epochs=1", "seed=0")
    assert result.returncode == 0, result.stderr
    (fingerprint,) = (user_folders["work"] / "outputs").rglob(RUN_FINGERPRINT_FILE)
    metrics = json.loads((fingerprint.parent / "metrics.json").read_text())
    assert metrics["method"] == "toy" and 0.0 <= metrics["metrics"]["test/acc"] <= 1.0
    settings = json.loads(fingerprint.read_text())["settings"]
    assert settings["method.smoothing"] == 0.1 and settings["data.name"] == "my_digits"


def test_a_bad_value_of_a_declared_setting_is_refused_before_anything_runs(user_folders):
    result = _dlab(user_folders, "method.smoothing=1.5", "trainer.max_epochs=1")
    assert result.returncode == 2
    assert result.stderr.strip() == "dlab: error: method.smoothing must be a number in [0, 1) (got 1.5)"
    assert "Traceback" not in result.stdout + result.stderr
    assert not (user_folders["work"] / "outputs").exists()
