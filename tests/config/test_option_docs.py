"""The option lists are generated, never kept by hand: README's marker blocks (scripts/option_docs.py, its
``--check`` run in-process), the docs and config comments choosing only options that exist, and
``dlab --help`` listing every config group's options, those of a user's config folder included."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from divergence_lab.config.checks import CONF_DIR, HYDRA_GROUP_PREFIX, chosen_groups, group_options
from divergence_lab.entry.help_sections import config_groups_section
from divergence_lab.ground.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DLAB = [sys.executable, "-c", "from divergence_lab.entry.cli import main; main()"]
GROUPS_HEADING = "== Configuration groups =="
OPTIONS = group_options([CONF_DIR])


def _load_script():
    spec = importlib.util.spec_from_file_location("option_docs", ROOT / "scripts" / "option_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


option_docs = _load_script()


def _stale_readme(tmp_path: Path) -> Path:
    """A README whose data list misses every option but ``digits``."""
    readme = tmp_path / "README.md"
    readme.write_text("| data | `data=`: <!-- options:data -->`digits`<!-- /options --> |\n")
    return readme


# --- the repository ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", option_docs.reference_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_docs_and_configs_choose_only_options_that_exist(path):
    assert option_docs.unknown_choices(path.read_text(), OPTIONS) == []


def test_the_checked_texts_include_the_readme_the_docs_and_train_yaml():
    checked = set(option_docs.reference_files())
    assert {ROOT / "README.md", CONF_DIR / "train.yaml", *(ROOT / "docs").glob("*.md")} <= checked


def test_the_readme_lists_are_generated_and_current(capsys):
    blocks = {f"{m['kind']}:{m['name']}" for m in option_docs.BLOCK.finditer(option_docs.README.read_text())}
    assert {"options:data", "options:method", "options:model", "groups:defaults", "groups:added"} <= blocks
    assert option_docs.main(["--check"]) == 0
    assert capsys.readouterr().err == ""


# --- the check on texts made up here ----------------------------------------------------------------------


def test_a_bogus_option_is_reported_once_and_keys_are_not_choices():
    text = (
        "Run `dlab data=digitz method=kd` or `dlab -m divergence=kl,nope seed=0,1`; the teacher with\n"
        "`model@method.teacher.model=resnet9`, a variant with `+pld_variant=ce,nope`.\n"
        "Keys are no choices: `method.teacher.model=cnn`, `seed=3`, `data.label_noise=0.2`.\n"
        "Once each: `data=digitz`."
    )
    assert option_docs.unknown_choices(text, OPTIONS) == [
        "data=digitz",
        "divergence=nope",
        "model=resnet9",
        "pld_variant=nope",
    ]


def test_placeholders_and_null_presets_are_not_checked():
    text = "`study=<name>`, `+pld_variant=ce,kd,...`, `experiment=<preset>_smoke`, `experiment=null`."
    assert option_docs.unknown_choices(text, OPTIONS) == []


def test_hydras_own_groups_are_checked_against_what_hydra_registers():
    text = "`hydra/launcher=joblib`, `hydra/launcher=slurm`, `hydra/sweeper=optuna`, `hydra/launcher=sbatch`"
    assert option_docs.unknown_choices(text, OPTIONS) == ["hydra/launcher=sbatch"]


@pytest.mark.parametrize(
    "text",
    [
        "$ dlab divergence=nope\ndlab: error: divergence=nope is not an option; choose one of: alpha, ...",
        "Add `conf/divergence/triangular.yaml`; now `dlab divergence=triangular` works.",
        "```yaml\nname: mymethod\nbuilder: my.build\n```\nthen `method=mymethod`.",
    ],
    ids=["shown refused", "file defined", "yaml defined"],
)
def test_a_value_the_text_refuses_or_defines_is_deliberate(text):
    assert option_docs.unknown_choices(text, OPTIONS) == []


def test_a_block_missing_an_option_is_stale_until_rewritten(tmp_path):
    chosen = chosen_groups()
    text = _stale_readme(tmp_path).read_text()
    assert option_docs.stale_blocks(text, OPTIONS, chosen) == ["options:data"]
    rewritten = option_docs.rewritten(text, OPTIONS, chosen)
    assert option_docs.stale_blocks(rewritten, OPTIONS, chosen) == []
    assert all(f"`{name}`" in rewritten for name in OPTIONS["data"])
    assert rewritten.startswith("| data | `data=`: <!-- options:data -->`breast_cancer`, ")  # prose kept


def test_the_group_blocks_split_the_defaults_list_from_the_groups_presets_add():
    chosen = chosen_groups()
    assert chosen[:4] == ["data", "model", "divergence", "method"]  # train.yaml's order
    added = option_docs.added_groups(OPTIONS, chosen)
    assert "pld_variant" in added and not set(added) & set(chosen)
    assert all("/" not in group for group in added)  # hydra/launcher, pld_variant/<pair>: folders inside
    assert set(chosen) | set(added) == {group.split("/")[0] for group in OPTIONS} - {"hydra"}


def test_a_block_naming_no_group_is_refused():
    with pytest.raises(ConfigError, match="options:nosuch"):
        option_docs.rewritten("<!-- options:nosuch --><!-- /options -->", OPTIONS, [])


def test_check_names_what_is_stale_in_one_line_and_write_fixes_it(tmp_path, monkeypatch, capsys):
    readme = _stale_readme(tmp_path)
    readme.write_text(readme.read_text() + "Try `dlab method=kdd`.\n")
    monkeypatch.setattr(option_docs, "README", readme)
    monkeypatch.setattr(option_docs, "reference_files", lambda: [readme])
    assert option_docs.main(["--check"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "README.md: stale options:data" in line and "method=kdd is not an option" in line
    assert option_docs.main(["--write"]) == 0
    assert option_docs.stale_blocks(readme.read_text(), OPTIONS, chosen_groups()) == []
    assert option_docs.main(["--check"]) == 1  # the bogus choice is prose: --write leaves it
    assert capsys.readouterr().err.endswith("README.md: method=kdd is not an option\n")


# --- dlab --help ------------------------------------------------------------------------------------------


def _listed_groups(help_text: str) -> dict[str, list[str]]:
    """``{group: options}`` of the help's config groups section (a line ``group: a, b`` per group, and any
    continuation lines of a wrapped one, indented)."""
    section = help_text.rsplit(GROUPS_HEADING, 1)[1].split("\n== ", 1)[0]
    listed: dict[str, list[str]] = {}
    group = ""
    for line in section.splitlines()[1:]:
        if line[:1].strip() and ": " in line:
            group, line = line.split(": ", 1)
        if line.strip():
            listed.setdefault(group, []).extend(o.strip() for o in line.split(",") if o.strip())
    return listed


def _own_config_folder(tmp_path: Path) -> Path:
    own = tmp_path / "conf"
    (own / "data").mkdir(parents=True)
    (own / "data" / "my_table.yaml").write_text("defaults: [tabular]\nname: my_table\n")
    (own / "my_group").mkdir()
    (own / "my_group" / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    return own


def test_the_groups_section_lists_every_group_of_every_config_folder(tmp_path):
    own = _own_config_folder(tmp_path)
    listed = _listed_groups(f"{GROUPS_HEADING}\n\n{config_groups_section([CONF_DIR, own])}")
    expected = {
        group: sorted(options)
        for group, options in group_options([CONF_DIR, own]).items()
        if not group.startswith(HYDRA_GROUP_PREFIX)
    }
    assert listed == expected
    assert "my_table" in listed["data"] and listed["my_group"] == ["mine"]


@pytest.mark.parametrize("how", ["-cd", "hydra.searchpath"])
def test_dlab_help_lists_the_options_of_a_users_config_folder(how, tmp_path):
    own = _own_config_folder(tmp_path)
    argv = ["-cd", str(own)] if how == "-cd" else [f"hydra.searchpath=[file://{own}]"]
    helped = subprocess.run(
        [*DLAB, *argv, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert helped.returncode == 0, helped.stderr
    listed = _listed_groups(helped.stdout)
    assert listed["data"] == sorted([*OPTIONS["data"], "my_table"]) and listed["my_group"] == ["mine"]
    assert listed["method"] == sorted(OPTIONS["method"])
