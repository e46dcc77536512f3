"""Details a reader of the report relies on: what a search is ranked by, what W&B access needs, labels that
stay text on a terminal, settings that apply to some runs only, verdicts and figures of a whole report."""

import csv
import json
import os

import pytest

from divergence_lab.report.command import main
from divergence_lab.report.provenance import collect_provenance

SEARCH_SWEEPER = "hydra_plugins.divergence_lab_plugins.optuna_sweeper.ResumableOptunaSweeper"


def _job(sweep, num, overrides, metrics, seed=0, **record):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed, **record}))
    return job


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_search_is_ranked_by_the_metric_it_optimised_not_by_a_test_metric(tmp_path):
    config = f"optimized_metric: val/acc\nhydra:\n  sweeper:\n    _target_: {SEARCH_SWEEPER}\n"
    (tmp_path / "multirun.yaml").write_text(config)
    # trial 1 is best on validation, trial 0 on test: the search saw validation only
    for trial, (val, test) in enumerate([(0.80, 0.95), (0.90, 0.85), (0.85, 0.90)]):
        overrides = [f"divergence.temperature={1 + trial}", f"method.alpha={0.1 * (trial + 1)}"]
        _job(tmp_path, trial, overrides, {"val/acc": val, "test/acc": test, "test/ece": 0.1})
    assert main([str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    main_table = markdown.split("\n\n")[2].splitlines()
    assert main_table[0].startswith("| divergence.temperature / method.alpha | n | val/acc ↑ | test/acc ↑")
    assert "no shared seed" not in markdown  # no baseline: no difference column at all
    with (tmp_path / "report.csv").open() as handle:
        val_rows = [row for row in csv.DictReader(handle) if row["metric"] == "val/acc"]
    ranks = {row["group"]: row["rank"] for row in val_rows}
    assert ranks["divergence.temperature=2, method.alpha=0.2"] == "1"


def test_wandb_without_a_login_is_refused_in_one_line_before_anything_is_written(
    tmp_path, capsys, monkeypatch
):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    _job(sweep, 0, ["divergence=kl"], {"test/acc": 0.9})
    before = _snapshot(sweep)
    assert main([str(sweep), "--wandb", "me/x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not logged in to W&B" in err and "Traceback" not in err
    assert main([str(sweep), "--wandb", "no-project"]) == 2
    assert "expected ENTITY/PROJECT" in capsys.readouterr().err
    assert _snapshot(sweep) == before


def test_terminal_tables_keep_brackets_as_text(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("{}\n")
    for num, (divergence, seconds) in enumerate([("kl", 12.5), ("rkl", 14.0)]):
        _job(sweep, num, [f"divergence={divergence}"], {"test/acc": 0.9}, wall_time_s=seconds)
    assert main([str(sweep), "--metrics", "wall_time_s"]) == 0
    out = capsys.readouterr().out
    # rich would have read [s] as strike-through markup
    assert "wall time [s] (↓ better): vs divergence=kl" in out
    assert "wall_time_s ↓" in out


def test_a_setting_of_some_runs_only_is_not_called_varying(tmp_path):
    jobs, records = [], []
    for num, divergence in enumerate(["kl", "kl", "sinkhorn", "sinkhorn"]):
        settings = {"seed": num % 2, "divergence.name": divergence, "method.alpha": 0.9}
        if divergence == "sinkhorn":
            settings["divergence.epsilon"] = 0.1
        job = _job(tmp_path, num, [f"divergence={divergence}", f"seed={num % 2}"], {"test/acc": 0.9})
        (job / "fingerprint.json").write_text(json.dumps({"sha256": "x", "settings": settings}))
        jobs.append(job)
        records.append({"metrics": {"test/acc": 0.9}})
    provenance = collect_provenance(jobs, records)
    assert provenance.varying_lines() == ["divergence.name: kl, sinkhorn"]
    assert provenance.partial_lines() == ["divergence.epsilon=0.1 (2 of 4 runs)"]


@pytest.fixture
def five_seed_sweep(tmp_path):
    """kl, rkl (steadily 0.02 worse), js (noisy, no real difference), five seeds; ECE near 0."""
    sweep = tmp_path / "study" / "2026-12-07_00-00-00-000000"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text(
        "report:\n  baseline: kl\n  equivalence_margin: {test/ece: 0.05}\n"
        "  effect_of_interest: {test/acc: 0.01}\n"
    )
    kl = [0.90, 0.93, 0.91, 0.94, 0.92]
    shifts = {
        "kl": [0.0] * 5,
        "rkl": [-0.02, -0.021, -0.019, -0.022, -0.018],
        "js": [0.01, -0.02, 0.015, -0.01, 0.0],
    }
    num = 0
    for divergence, shift in shifts.items():
        for seed in range(5):
            ece = 0.001 + 0.01 * (seed % 2) + 0.0005 * ((seed * 7 + list(shifts).index(divergence)) % 3)
            metrics = {"test/acc": kl[seed] + shift[seed], "test/ece": ece}
            record = {"selected_epoch": 10 + seed, "n_train": 1078, "n_val": 179, "n_test": 359}
            _job(sweep, num, [f"divergence={divergence}", f"seed={seed}"], metrics, seed, **record)
            num += 1
    return sweep


def test_a_whole_report_states_verdicts_power_and_model_selection(five_seed_sweep):
    assert main([str(five_seed_sweep)]) == 0
    markdown = (five_seed_sweep / "report.md").read_text()
    answer = markdown.split("## Answer")[1].split("\n\n")[1]
    assert (
        "test accuracy (↑ better)** vs divergence=kl: worse: rkl; no difference detected: js (could detect ≥"
        in answer
    )
    assert "equivalent: rkl, js" in answer  # ECE within ±0.05 on five seeds
    assert "p (Holm)" in markdown and "MDE" in markdown
    assert "Effect of interest |Δ| = 0.0100: paired seeds that would detect it" in markdown
    assert "Selected epochs: 10–14" in markdown
    assert "Split sizes: n_train = 1078, n_val = 179, n_test = 359." in markdown
    assert "one test example = 0.0028 (0.28 pt)" in markdown
    assert "†" in markdown  # an ECE interval cut at 0
    assert "[−0.00" not in markdown.split("### test ECE")[1].split("Δ vs")[0]  # no group CI below 0
    assert (five_seed_sweep / "report_forest.png").is_file()
    with (five_seed_sweep / "report.csv").open() as handle:
        rows = {(r["group"], r["metric"]): r for r in csv.DictReader(handle)}
    rkl = rows[("rkl", "test/acc")]
    assert rkl["verdict"] == "worse" and float(rkl["p_adjusted"]) < 0.05 and rkl["wins"] == "0/5"
    assert float(rkl["p_adjusted"]) == pytest.approx(min(1.0, 2 * float(rkl["p_value"])))  # Holm, 2 tests
    with (five_seed_sweep / "report_seeds.csv").open() as handle:
        seeds = [r for r in csv.DictReader(handle) if r["group"] == "js" and r["metric"] == "test/acc"]
    assert [(r["seed"], r["selected_epoch"]) for r in seeds] == [(str(s), str(10 + s)) for s in range(5)]
    page = (five_seed_sweep / "report.html").read_text()
    assert "<h2>Model selection</h2>" in page and "n_test = 359" in page
    assert page.count("two-sided paired t test, Holm-corrected") == 1  # one clause for both metrics


def test_test_and_correction_choices_change_the_report_and_bad_ones_are_refused(five_seed_sweep, capsys):
    assert main([str(five_seed_sweep), "--test", "wilcoxon", "--correction", "none"]) == 0
    markdown = (five_seed_sweep / "report.md").read_text()
    assert "p (Wilcoxon signed-rank)" in markdown and "p (uncorrected)" in markdown
    assert "not detectable with n=5 (wilcoxon test)" in markdown  # its smallest p is 0.0625
    before = _snapshot(five_seed_sweep)
    with pytest.raises(SystemExit) as refused:
        main([str(five_seed_sweep), "--test", "z"])
    assert refused.value.code == 2 and "invalid choice: 'z'" in capsys.readouterr().err
    assert _snapshot(five_seed_sweep) == before
    (five_seed_sweep / "multirun.yaml").write_text("report:\n  effect_of_interest: 0.01\n")
    before = _snapshot(five_seed_sweep)
    assert main([str(five_seed_sweep)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report.effect_of_interest: expected a mapping metric -> value" in err
    assert _snapshot(five_seed_sweep) == before
