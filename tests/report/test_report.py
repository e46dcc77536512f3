"""dlab-report on sweep folders laid out exactly as Hydra's multirun writes them."""

import csv
import json
import statistics
import time

import pytest

from divergence_lab.report.collect import collect, find_sweep, sweep_metrics
from divergence_lab.report.command import main
from divergence_lab.report.reliability import pooled_reliability, write_reliability_grid


def _job(sweep, num, overrides, metrics, seed):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))


@pytest.fixture
def sweep(tmp_path):
    folder = tmp_path / "study" / "2026-01-01_00-00-00-000000"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text("{}\n")
    accs = {"kl": [0.90, 0.92, 0.95], "rkl": [0.80, 0.84, 0.83]}
    num = 0
    for divergence, values in accs.items():
        for seed, acc in enumerate(values):
            _job(
                folder,
                num,
                [f"divergence={divergence}", f"seed={seed}", "trainer.max_epochs=5"],
                {"test/acc": acc, "test/ece": 0.1 * (seed + 1)},
                seed,
            )
            num += 1
    _job(folder, num, ["divergence=js", "seed=0", "trainer.max_epochs=5"], None, 0)  # a failed job
    return folder, accs


def test_groups_by_overrides_without_seed_and_summarises(sweep):
    folder, accs = sweep
    result = collect(folder, ["test/acc", "test/ece"])
    assert result.varying == ["divergence"]
    assert [g.label(result.varying) for g in result.groups] == ["kl", "rkl"]
    for group, divergence in zip(result.groups, ("kl", "rkl"), strict=True):
        mean, std = group.summary("test/acc")
        assert mean == pytest.approx(statistics.fmean(accs[divergence]))
        assert std == pytest.approx(statistics.stdev(accs[divergence]))
        assert sorted(group.seeds) == [0, 1, 2]
    assert [job.job_dir.name for job in result.missing] == ["6"]


def test_main_writes_markdown_csv_and_png(sweep, capsys):
    folder, accs = sweep
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "kl" in out and "rkl" in out and "0.9233 ± 0.0252" in out
    markdown = (folder / "report.md").read_text()
    assert "| kl | 3 | 0.9233 ± 0.0252 ★ | 0.2000 ± 0.1000 ★ |" in markdown  # equal ECE: both best
    assert "| rkl | 3 | 0.8233 ± 0.0208 | 0.2000 ± 0.1000 ★ |" in markdown
    assert "Jobs: 6 finished, 1 starting" in markdown and "  - 6 (starting: no checkpoint yet)" in markdown
    rows = list(csv.DictReader((folder / "report.csv").open()))
    assert (rows[1]["group"], rows[1]["metric"]) == ("rkl", "test/acc")
    assert float(rows[1]["mean"]) == pytest.approx(0.8233333)
    seeds = list(csv.DictReader((folder / "report_seeds.csv").open()))
    assert [(r["group"], r["seed"], float(r["value"])) for r in seeds if r["metric"] == "test/acc"] == [
        (d, str(s), v) for d in ("kl", "rkl") for s, v in enumerate(accs[d])
    ]
    assert (folder / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_folder_reports_its_latest_sweep(sweep):
    folder, _ = sweep
    newer = folder.parent / "2026-02-01_00-00-00-000000"
    newer.mkdir()
    (newer / "multirun.yaml").write_text("{}\n")
    _job(newer, 0, ["divergence=tv", "seed=0"], {"test/acc": 0.5, "test/ece": 0.2}, 0)
    time.sleep(0.01)
    assert find_sweep(folder.parent) == newer
    assert find_sweep(folder) == folder


def test_several_varying_keys_label_rows_with_both(tmp_path):
    for num, (divergence, temperature) in enumerate([("kl", 1), ("kl", 4), ("js", 1)]):
        _job(
            tmp_path,
            num,
            [f"divergence={divergence}", f"divergence.temperature={temperature}", "seed=0"],
            {"test/acc": 0.5},
            0,
        )
    result = collect(tmp_path, ["test/acc"])
    labels = [g.label(result.varying) for g in result.groups]
    assert labels == [
        "divergence=kl, divergence.temperature=1",
        "divergence=kl, divergence.temperature=4",
        "divergence=js, divergence.temperature=1",
    ]
    assert result.groups[0].summary("test/acc") == (0.5, 0.0)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_bad_folders_are_refused_with_a_message(tmp_path, capsys, make):
    target = tmp_path / "nothing-here"
    if make == "empty":
        target.mkdir()
    assert main([str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlab-report: error:") and len(err.strip().splitlines()) == 1


def test_metrics_default_to_the_sweep_configs_report_section(sweep, capsys):
    folder, _ = sweep
    (folder / "multirun.yaml").write_text("report:\n  metrics: [test/ece, test/teacher_acc]\n")
    assert sweep_metrics(folder) == ["test/ece", "test/teacher_acc"]
    assert main([str(folder)]) == 0
    markdown = (folder / "report.md").read_text()
    assert "| divergence | n | test/ece ↓ | test/teacher_acc ↑ |" in markdown
    assert "| kl | 3 | 0.2000 ± 0.1000 ★ | — |" in markdown  # a metric no run logged is shown as missing


def test_reliability_bins_are_pooled_over_seeds(tmp_path):
    bins = {"edges": [0.0, 0.5, 1.0], "count": [2, 2], "confidence": [0.4, 0.9], "accuracy": [0.5, 1.0]}
    other = {"edges": [0.0, 0.5, 1.0], "count": [0, 4], "confidence": [0.0, 0.8], "accuracy": [0.0, 0.5]}
    for num, content in enumerate((bins, other)):
        _job(tmp_path, num, ["method=dml", f"seed={num}"], {"test/acc": 0.5}, num)
        (tmp_path / str(num) / "reliability.json").write_text(json.dumps({"model": content}))
    (group,) = collect(tmp_path, ["test/acc"]).groups
    pooled = pooled_reliability(group)["model"]
    assert pooled["count"] == [2, 6]
    assert pooled["confidence"][1] == pytest.approx((2 * 0.9 + 4 * 0.8) / 6)
    assert pooled["accuracy"][1] == pytest.approx((2 * 1.0 + 4 * 0.5) / 6)
    expected_ece = (2 * abs(0.5 - 0.4) + 6 * abs(4 / 6 - 5 / 6)) / 8
    assert pooled["ece"] == pytest.approx(expected_ece)
    assert write_reliability_grid(collect(tmp_path, ["test/acc"]), tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def _status(job_dir, **status):
    (job_dir / "status.json").write_text(json.dumps(status))


def test_unfinished_jobs_are_listed_with_their_state(tmp_path, capsys):
    """A sweep still running on SLURM: finished, failed, running and unstarted jobs are all accounted for."""
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "multirun.yaml").write_text(
        "hydra:\n"
        "  sweeper:\n"
        "    _target_: hydra._internal.core_plugins.basic_sweeper.BasicSweeper\n"
        "    params:\n"
        "      divergence: kl,rkl\n"
        "      seed: 0,1\n"
        "  overrides:\n"
        "    task:\n"
        "    - divergence=kl,rkl,js\n"  # the command line replaces the params' list
        "    - trainer.max_epochs=5\n"
    )
    _job(folder, 0, ["divergence=kl", "seed=0"], {"test/acc": 0.9}, 0)
    _job(folder, 1, ["divergence=kl", "seed=1"], {"test/acc": 0.8}, 1)
    _job(folder, 2, ["divergence=rkl", "seed=0"], None, 0)
    error = "ConfigError: method.alpha must be a number in [0, 1] (got 2)"
    _status(folder / "2", state="failed", error=error)
    _job(folder, 3, ["divergence=rkl", "seed=1"], None, 1)
    _status(folder / "3", state="running", attempt=2, slurm_job_id="17")
    (folder / "3" / "checkpoints").mkdir()
    (folder / "3" / "checkpoints" / "last.ckpt").write_bytes(b"")
    result = collect(folder, ["test/acc"])
    assert result.expected == 6  # 3 divergences x 2 seeds
    lines = result.progress_lines()
    assert lines[0] == "Jobs of 6: 2 finished, 1 running, 1 failed, 2 not started"
    assert lines[1] == "- 2 (failed: ConfigError: method.alpha must be a number in [0, 1] (got 2))"
    assert lines[2].startswith("- 3 (running: SLURM job 17, attempt 2, last checkpoint ")
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "Jobs of 6: 2 finished" in out and "failed: ConfigError" in out
    assert "2 not started" in (folder / "report.md").read_text()


def test_optuna_sweeps_have_no_fixed_job_count(tmp_path):
    from divergence_lab.report.job_status import expected_job_count

    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n"
        "    _target_: hydra_plugins.divergence_lab_plugins.optuna_sweeper.ResumableOptunaSweeper\n"
    )
    assert expected_job_count(tmp_path) is None


def test_gcd_curves_are_averaged_over_seeds_and_drawn(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "multirun.yaml").write_text("{}\n")
    num = 0
    for variant, old_end in (("false", 0.6), ("true", 0.8)):
        for seed in range(2):
            _job(folder, num, [f"method.use_ler={variant}", f"seed={seed}"], {"test/acc": 0.7}, seed)
            curve = [
                {"epoch": e, "acc_old": old_end + 0.1 * seed * (e == 2), "acc_new": 0.5, "acc_all": 0.6}
                for e in range(3)
            ]
            (folder / str(num) / "gcd_curve.json").write_text(json.dumps(curve))
            num += 1
    from divergence_lab.report.curves import curve_panels, write_curves

    result = collect(folder, ["test/acc"])
    old = curve_panels(result)[0][0]
    assert old.metric == "acc_old"
    assert old.lines["false"].mean[-1] == pytest.approx(0.65)  # mean of 0.6 and 0.7 at the last epoch
    assert old.lines["true"].mean[-1] == pytest.approx(0.85)
    assert write_curves(result, folder / "curves.png")
    assert (folder / "curves.png").stat().st_size > 0
    assert main([str(folder)]) == 0
    assert "(report_curves.png)" in (folder / "report.md").read_text()


def test_numeric_sweep_key_gets_a_line_plot_and_top_level_numbers_are_metrics(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "multirun.yaml").write_text("{}\n")
    num = 0
    for variant in ("cts", "snip"):
        for kappa in ("0.1", "0.01"):
            for seed in range(2):
                _job(
                    folder,
                    num,
                    [f"+v={variant}", f"method.density={kappa}", f"seed={seed}"],
                    {"test/acc": 0.5},
                    seed,
                )
                record = json.loads((folder / str(num) / "metrics.json").read_text())
                (folder / str(num) / "metrics.json").write_text(
                    json.dumps({**record, "wall_time_s": 2.0 + seed})
                )
                num += 1
    from divergence_lab.report.lines import numeric_key

    result = collect(folder, ["test/acc", "wall_time_s"])
    assert numeric_key(result.varying, result.groups) == "method.density"
    assert result.groups[0].summary("wall_time_s") == pytest.approx((2.5, statistics.stdev([2.0, 3.0])))
    assert main([str(folder), "--metrics", "test/acc", "wall_time_s"]) == 0
    assert (folder / "report_lines.png").stat().st_size > 0
    assert "![report_lines](report_lines.png)" in (folder / "report.md").read_text()
