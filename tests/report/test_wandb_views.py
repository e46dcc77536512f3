"""``dlab-report --wandb-view``: the W&B workspace and report of a sweep, checked as the specs the library
would send (``--spec-only``), offline; the sweep folders are laid out as ``dlab -m`` leaves them, with the
study's real composed config as ``multirun.yaml``."""

import json
import socket
import sys

import pytest
import wandb
from omegaconf import OmegaConf

from divergence_lab.report.command import main
from divergence_lab.report.errors import ReportError
from divergence_lab.report.wandb_view_content import config_key, parse_project_path, without_figures
from tests.conftest import compose_config

DIVERGENCES = {"kl": 0.95, "rkl": 0.90, "js": 0.94}
SEEDS = (0, 1, 2)
REPORTED = ("test/acc", "test/ece", "test/agreement")
REPORT_FILES = ("report.md", "report.csv", "report.html")


def _job(sweep, num, overrides, metrics, seed):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))


def _metrics(acc, seed):
    return {
        "test/acc": acc + 0.01 * seed,
        "test/ece": 0.05 - 0.01 * seed,
        "test/agreement": acc + 0.02 - 0.005 * seed,
        "val/acc": acc - 0.01 * seed,
        "val/nll": 0.3 + 0.01 * seed,
    }


@pytest.fixture(scope="module")
def grid_config():
    return OmegaConf.to_yaml(compose_config(["study=kd_divergences"], with_hydra=True))


@pytest.fixture(scope="module")
def search_config():
    return OmegaConf.to_yaml(compose_config(["hparams_search=kd_optuna"], with_hydra=True))


@pytest.fixture
def grid_sweep(tmp_path, grid_config):
    """``study=kd_divergences`` run over three divergences and three seeds."""
    folder = tmp_path / "kd_divergences" / "2026-01-01_00-00-00-000000"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(grid_config)
    num = 0
    for divergence, acc in DIVERGENCES.items():
        for seed in SEEDS:
            _job(folder, num, [f"divergence={divergence}", f"seed={seed}"], _metrics(acc, seed), seed)
            num += 1
    return folder


@pytest.fixture
def search_sweep(tmp_path, search_config):
    """An Optuna search (``hparams_search=kd_optuna``): each trial its own divergence, T and alpha."""
    folder = tmp_path / "kd_optuna" / "optuna"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(search_config)
    trials = [("kl", "2.0", "0.5"), ("rkl", "4.5", "0.9"), ("js", "1.5", "0.3")]
    for num, (divergence, temperature, alpha) in enumerate(trials):
        overrides = [
            f"divergence={divergence}",
            f"divergence.temperature={temperature}",
            f"method.alpha={alpha}",
        ]
        _job(folder, num, overrides, _metrics(DIVERGENCES[divergence], 0), 0)
    return folder


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No W&B login and no network: any connection attempt or W&B API client fails the test."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")

    def refuse(*args, **kwargs):
        raise AssertionError("network access while building the W&B views")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(wandb, "Api", refuse)


def _specs(sweep, tmp_path, *options):
    target = tmp_path / "views.json"
    assert main([str(sweep), "--spec-only", str(target), *options]) == 0
    return json.loads(target.read_text())


def _sections(workspace):
    return {s["name"]: s for s in workspace["spec"]["section"]["panelBankConfig"]["sections"]}


def _panels(workspace, view_type):
    return [p for s in _sections(workspace).values() for p in s["panels"] if p["viewType"] == view_type]


def _report_grid(report):
    return next(b for b in report["spec"]["blocks"] if b["type"] == "panel-grid")["metadata"]


def test_grid_workspace_groups_by_divergence_with_curves_bars_and_tables(grid_sweep, tmp_path, offline):
    workspace = _specs(grid_sweep, tmp_path)["workspace"]
    assert workspace["displayName"] == f"kd_divergences · {grid_sweep.name}"
    runset = workspace["spec"]["section"]["runSets"][0]
    assert runset["filters"]["filters"] == [
        {
            "key": {"section": "run", "name": "group"},
            "op": "=",
            "value": f"kd_divergences/{grid_sweep.name}",
            "disabled": False,
        }
    ]
    assert runset["grouping"] == [{"section": "config", "name": "run/divergence.value"}]

    curves = _panels(workspace, "Run History Line Plot")
    assert [p["config"]["metrics"] for p in curves] == [["val/acc"], ["val/nll"]]  # method.val_metrics of kd
    for panel in curves:
        assert panel["config"]["xAxis"] == "epoch"
        assert (panel["config"]["groupAgg"], panel["config"]["groupArea"]) == ("mean", "stddev")
    bars = _panels(workspace, "Bar Chart")
    assert [p["config"]["metrics"] for p in bars] == [[m] for m in REPORTED]
    assert [p["config"]["chartTitle"] for p in bars] == [
        "test accuracy (↑ better)",
        "test ECE (↓ better)",
        "test agreement with the teacher (↑ better)",
    ]
    assert all(p["config"]["groupArea"] == "stddev" for p in bars)
    assert _panels(workspace, "Parallel Coordinates Plot") == []  # a grid is no search
    assert len(_panels(workspace, "Run Comparer")) == 1

    (markdown,) = (p["config"]["value"] for p in _panels(workspace, "Markdown Panel"))
    assert "`kl` = forward KL, `rkl` = reverse KL, `js` = Jensen-Shannon" in markdown
    assert "## Which is better?" in markdown and "| reverse KL |" in markdown  # the report's tables
    assert "![" not in markdown  # the figures stay in the sweep folder
    colors = workspace["spec"]["section"]["customRunColors"]
    assert len(colors) == len(DIVERGENCES) and all("run%2Fdivergence" in key for key in colors)


def test_grid_report_holds_one_runset_the_same_panels_and_the_tables(grid_sweep, tmp_path, offline):
    specs = _specs(grid_sweep, tmp_path, "--wandb-view", "my-team/divergences")
    report = specs["report"]
    assert report["project"] == {"name": "divergences", "entityName": "my-team"}
    assert report["displayName"] == f"kd_divergences · {grid_sweep.name}"
    assert f"kd_divergences/{grid_sweep.name}" in report["description"]
    grid = _report_grid(report)
    (runset,) = grid["runSets"]
    assert "project" not in runset  # looked up through the W&B API only when saved
    assert runset["grouping"] == [{"section": "config", "name": "run/divergence.value"}]
    assert runset["filters"]["filters"][0]["value"] == f"kd_divergences/{grid_sweep.name}"
    panels = grid["panelBankSectionConfig"]["panels"]
    assert [p["config"].get("metrics") for p in panels if p["viewType"] != "Run Comparer"] == [
        ["val/acc"],
        ["val/nll"],
        *([m] for m in REPORTED),
    ]
    (markdown,) = (b["content"] for b in report["spec"]["blocks"] if b["type"] == "markdown-block")
    assert (grid_sweep / "report.md").read_text().split("## Which is better?")[1][:400] in markdown
    assert specs["workspace"]["entity"] == "my-team" and specs["workspace"]["project"] == "divergences"


def test_search_views_get_parallel_coordinates_over_the_swept_keys_and_the_objective(
    search_sweep, tmp_path, offline
):
    specs = _specs(search_sweep, tmp_path)
    workspace = specs["workspace"]
    assert workspace["entity"] == "ENTITY" and workspace["project"] == "PROJECT"  # no --wandb-view
    assert workspace["spec"]["section"]["runSets"][0]["filters"]["filters"][0]["value"] == "kd_optuna/optuna"
    (coordinates,) = _panels(workspace, "Parallel Coordinates Plot")
    columns = coordinates["config"]["columns"]
    assert [c["accessor"] for c in columns] == [
        "config:run/divergence.value",
        "config:divergence.value.temperature",
        "config:method.value.alpha",
        "summary:selected/val_acc",  # optimized_metric val/acc, at the tested checkpoint
    ]
    assert columns[-1]["displayName"] == "val accuracy (↑ better), selected epoch"
    bars = [p["config"]["metrics"] for p in _panels(workspace, "Bar Chart")]
    assert bars == [["selected/val_acc"], ["test/acc"], ["test/ece"]]  # objective first, then the defaults
    grid = _report_grid(specs["report"])
    assert any(p["viewType"] == "Parallel Coordinates Plot" for p in grid["panelBankSectionConfig"]["panels"])
    assert [g["name"] for g in grid["runSets"][0]["grouping"]] == [
        "run/divergence.value",
        "divergence.value.temperature",
        "method.value.alpha",
    ]


def _one_line_refusal(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dlab-report: error: ")
    return err


def test_saving_without_a_login_is_refused_before_anything_is_written(grid_sweep, tmp_path, capsys, offline):
    before = sorted(p.name for p in grid_sweep.iterdir())
    assert main([str(grid_sweep), "--wandb-view", "my-team/divergences"]) == 2
    err = _one_line_refusal(capsys)
    assert "not logged in to W&B" in err and "--wandb-view my-team/divergences" in err
    assert sorted(p.name for p in grid_sweep.iterdir()) == before
    assert not any((grid_sweep / name).exists() for name in REPORT_FILES)


@pytest.mark.parametrize("path", ["divergences", "my-team/", "a/b/c", "my team/divergences"])
def test_a_malformed_entity_project_is_refused(grid_sweep, tmp_path, capsys, offline, path):
    target = tmp_path / "views.json"
    assert main([str(grid_sweep), "--wandb-view", path, "--spec-only", str(target)]) == 2
    assert "expected ENTITY/PROJECT" in _one_line_refusal(capsys)
    assert not target.exists() and not (grid_sweep / "report.md").exists()


def test_a_spec_file_in_a_missing_folder_is_refused(grid_sweep, tmp_path, capsys, offline):
    assert main([str(grid_sweep), "--spec-only", str(tmp_path / "missing" / "views.json")]) == 2
    assert "does not exist" in _one_line_refusal(capsys)
    assert not (grid_sweep / "report.md").exists()


def test_a_missing_library_names_the_extra_to_install(grid_sweep, tmp_path, capsys, offline, monkeypatch):
    for name in [n for n in sys.modules if n.partition(".")[0] == "wandb_workspaces"] + ["wandb_workspaces"]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it raises ImportError
    assert main([str(grid_sweep), "--spec-only", str(tmp_path / "views.json")]) == 2
    assert "pip install 'divergence_lab[wandb-views]'" in _one_line_refusal(capsys)


@pytest.mark.parametrize(
    ("swept", "config", "expected"),
    [
        ("divergence", {}, "run/divergence"),
        ("data", {}, "run/data"),
        ("divergence.temperature", {"divergence": {"temperature": 2.0}}, "divergence.temperature"),
        ("model", {"model": {"name": "mlp", "hidden": [32]}}, "model.name"),
    ],
)
def test_swept_keys_group_by_the_runs_labels_or_their_config_key(swept, config, expected):
    assert config_key(swept, config) == expected


def test_project_paths_and_figure_sections():
    assert parse_project_path("my-team/kd.v2", "--wandb-view") == ("my-team", "kd.v2")
    with pytest.raises(ReportError, match="expected ENTITY/PROJECT"):
        parse_project_path("/kd", "--wandb-view")
    text = (
        "# R\n\n## Table\n\n| a |\n\n## Curves\n\ncaption\n\n![curves](report_curves.png)\n\n## Notes\n\nx\n"
    )
    assert without_figures(text) == "# R\n\n## Table\n\n| a |\n\n## Notes\n\nx\n"
    ranks = "## Across datasets\n\n| kl | 1.5 |\n\n- Friedman p = 0.01\n\n![report_cd](report_cd.png)\n"
    assert without_figures(f"# R\n\n{ranks}") == (
        "# R\n\n## Across datasets\n\n| kl | 1.5 |\n\n- Friedman p = 0.01\n"
    )  # the ranks stay; only the diagram's link goes
