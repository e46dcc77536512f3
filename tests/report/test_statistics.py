"""The report's statistics against hand-computed numbers, and how the report shows them.

Student's t with 2 degrees of freedom has a closed form, ``F(t) = 1/2 + t / (2 sqrt(2 + t²))``, so the
3-seed cases below are checked without scipy: the 97.5 % quantile is ``sqrt(2 q² / (1 − q²))`` with
``q = 2 · 0.475``, and the two-sided p-value of ``t`` is ``1 − t / sqrt(2 + t²)``.
"""

import csv
import json
import math

import pytest

from divergence_lab.report.collect import collect
from divergence_lab.report.command import main
from divergence_lab.report.comparison import compare, resolve_baseline
from divergence_lab.report.errors import ReportError
from divergence_lab.report.statistics import paired_difference, rank, summarise

Q = 2 * 0.475
T_975_DF2 = math.sqrt(2 * Q**2 / (1 - Q**2))  # 4.3027
KL = {0: 0.90, 1: 0.92, 2: 0.95}
RKL = {0: 0.80, 1: 0.84, 2: 0.83}  # differences to kl: -0.10, -0.08, -0.12


def p_two_sided_df2(t: float) -> float:
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_t_quantile_closed_form_is_right():
    assert abs(T_975_DF2 - 4.302653) < 1e-6  # the tabulated t_{0.975, 2}


def test_summary_of_three_seeds_by_hand():
    summary = summarise(list(KL.values()))
    mean = (0.90 + 0.92 + 0.95) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in KL.values()) / 2)
    half = T_975_DF2 * std / math.sqrt(3)
    assert (summary.n, summary.mean, summary.std) == (3, pytest.approx(mean), pytest.approx(std))
    assert summary.ci == (pytest.approx(mean - half), pytest.approx(mean + half))


def test_one_seed_has_no_spread_and_no_interval():
    summary = summarise([0.7])
    assert (summary.mean, summary.std, summary.ci) == (0.7, None, None)


def test_paired_difference_by_hand():
    difference = paired_difference(RKL, KL)
    diffs = [RKL[s] - KL[s] for s in KL]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    t = mean / (sd / math.sqrt(3))
    half = T_975_DF2 * sd / math.sqrt(3)
    assert difference.n_pairs == 3 and difference.unpaired_seeds == ()
    assert difference.mean == pytest.approx(-0.10)
    assert difference.ci == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert difference.p_value == pytest.approx(p_two_sided_df2(t), rel=1e-9)
    assert difference.p_value == pytest.approx(0.013072, abs=1e-6)


def test_pairing_uses_shared_seeds_only_and_reports_the_others():
    difference = paired_difference({**RKL, 3: 0.99}, KL)
    assert difference.n_pairs == 3 and difference.unpaired_seeds == (3,)
    assert difference.mean == pytest.approx(-0.10)  # seed 3 has no kl counterpart: left out


def test_fewer_than_three_pairs_are_never_tested():
    difference = paired_difference({0: 0.5, 1: 0.7}, {0: 0.4, 1: 0.5})
    assert difference.n_pairs == 2 and difference.p_value is None and not difference.tested
    assert difference.mean == pytest.approx(0.15)
    assert difference.ci is not None  # an interval is still shown (wide, df = 1)


def test_identical_differences_have_no_p_value():
    difference = paired_difference({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.5, 2: 0.6})
    assert difference.p_value is None and difference.mean == pytest.approx(0.1)


def test_no_shared_seed_gives_no_difference():
    assert paired_difference({0: 0.5}, {1: 0.5}) is None


def test_rank_marks_groups_whose_interval_overlaps_the_best_as_tied():
    summaries = {
        "a": summarise([0.90, 0.91, 0.92]),  # best, CI ~ [0.875, 0.945]
        "b": summarise([0.88, 0.90, 0.92]),  # CI overlaps a's
        "c": summarise([0.50, 0.51, 0.52]),  # far below
    }
    ranks = rank(summaries, direction=1)
    assert [ranks[k].describe() for k in "abc"] == ["1=", "1=", "3"]
    assert [ranks[k].position for k in "abc"] == [1, 2, 3]
    lower_better = rank(summaries, direction=-1)
    assert lower_better["c"].position == 1 and lower_better["c"].describe() == "1"
    assert rank(summaries, direction=0) == {}


def test_one_seed_ranks_are_not_tested():
    ranks = rank({"a": summarise([0.9]), "b": summarise([0.8])}, direction=1)
    assert [ranks[k].describe() for k in "ab"] == ["1", "2"]
    assert not ranks["a"].tested


def _job(sweep, num, overrides, metrics, seed):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))
    return job


def _grid(tmp_path, multirun="{}\n"):
    """divergence x temperature x 3 seeds; js beats kl by 0.02 at T=4 only."""
    (tmp_path / "multirun.yaml").write_text(multirun)
    num = 0
    for divergence in ("kl", "js"):
        for temperature in ("1", "4"):
            for seed in range(3):
                gain = 0.02 if (divergence, temperature) == ("js", "4") else 0.0
                acc = 0.8 + 0.01 * seed + gain + (0.001 * seed * (divergence == "js"))
                metrics = {"test/acc": acc, "test/ece": 0.1 - gain}
                _job(tmp_path, num, [f"divergence={divergence}", f"divergence.temperature={temperature}",
                                     f"seed={seed}"], metrics, seed)  # fmt: skip
                num += 1
    return collect(tmp_path, ["test/acc", "test/ece"])


def test_baseline_pairs_within_the_other_varying_values(tmp_path):
    report = _grid(tmp_path)
    baseline = resolve_baseline(report, "kl")
    assert (baseline.key, baseline.value) == ("divergence", "kl")
    (acc, _) = compare(report, baseline)
    by_label = {row.label: row for row in acc.rows}
    js4 = by_label["divergence=js, divergence.temperature=4"]
    # js at T=4 is paired with kl at T=4: differences 0.020, 0.021, 0.022
    assert js4.difference.mean == pytest.approx(0.021)
    assert js4.difference.n_pairs == 3
    js1 = by_label["divergence=js, divergence.temperature=1"]
    assert js1.difference.mean == pytest.approx(0.001)
    assert by_label["divergence=kl, divergence.temperature=4"].is_baseline


def test_baseline_specs_and_refusals(tmp_path):
    report = _grid(tmp_path)
    assert resolve_baseline(report, "divergence.temperature=4").value == "4"
    assert resolve_baseline(report, None).value == "kl"  # the first group's first varying value
    with pytest.raises(ReportError, match=r"--baseline 'tv' is no group of .*choose one of: divergence"):
        resolve_baseline(report, "tv")


def test_the_cli_refuses_an_unknown_baseline_in_one_line_and_writes_nothing(tmp_path, capsys):
    _grid(tmp_path)
    assert main([str(tmp_path), "--baseline", "tv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlab-report: error: --baseline 'tv'") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "report.md").exists()


def test_declared_baseline_and_display_names_come_from_the_sweep_config(tmp_path, capsys):
    multirun = "report:\n  baseline: js\n  display_names: {kl: Forward KL, js: Jensen-Shannon}\n"
    _grid(tmp_path, multirun)
    assert main([str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "Baseline: **Jensen-Shannon**" in markdown
    assert "| Forward KL, divergence.temperature=4 | 3 |" in markdown
    assert "| Jensen-Shannon, divergence.temperature=4 | 3 | 0.8310 ± 0.0110 ★ |" in markdown
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    kl4 = next(
        r for r in rows if r["group"] == "Forward KL, divergence.temperature=4" and r["metric"] == "test/acc"
    )
    assert float(kl4["diff_mean"]) == pytest.approx(-0.021)
    assert main([str(tmp_path), "--baseline", "Forward KL"]) == 0  # a display name names its value
    assert "Baseline: **Forward KL**" in (tmp_path / "report.md").read_text()


def test_report_shows_n_a_for_one_seed_and_says_nothing_is_tested(tmp_path, capsys):
    (tmp_path / "multirun.yaml").write_text("{}\n")
    _job(tmp_path, 0, ["divergence=kl", "seed=0"], {"test/acc": 0.9, "test/ece": 0.05}, 0)
    _job(tmp_path, 1, ["divergence=rkl", "seed=0"], {"test/acc": 0.8, "test/ece": 0.07}, 0)
    assert main([str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "0.9000 ± n/a ★" in markdown and "± 0.0000" not in markdown
    assert "not tested (n=1 < 3)" in markdown
    assert "Fewer than 3 paired seeds: no significance is claimed" in markdown
    assert "One seed per group: the order is not tested" in markdown


def test_unmatched_seeds_are_noted(tmp_path):
    (tmp_path / "multirun.yaml").write_text("{}\n")
    for seed in range(3):
        _job(tmp_path, seed, ["divergence=kl", f"seed={seed}"], {"test/acc": 0.9 + seed / 100}, seed)
    for seed in range(4):
        _job(tmp_path, 3 + seed, ["divergence=rkl", f"seed={seed}"], {"test/acc": 0.8 + seed / 50}, seed)
    assert main([str(tmp_path), "--metrics", "test/acc"]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "rkl: seed(s) 3 without a baseline run of the same seed, left out of Δ." in markdown
    assert "(n=3)" in markdown


def test_provenance_names_fixed_and_varying_settings_teachers_code_and_time(tmp_path):
    from divergence_lab.report.provenance import collect_provenance

    jobs, records = [], []
    for num, (divergence, seed) in enumerate([("kl", 0), ("kl", 1), ("rkl", 0), ("rkl", 1)]):
        settings = {
            "seed": seed,
            "method.name": "kd",
            "method.alpha": 0.9,
            "divergence.name": divergence,
            "divergence.temperature": 2.0,
            "trainer.max_epochs": 20,
            "model._target_": "divergence_lab.models.mlp.MLP",
        }
        job = _job(tmp_path, num, [f"divergence={divergence}", f"seed={seed}"], {"test/acc": 0.9}, seed)
        (job / "fingerprint.json").write_text(json.dumps({"sha256": "x", "settings": settings}))
        (job / "teacher.json").write_text(
            json.dumps({"abc123": {"model": "MLP", "test_metrics": {"test/acc": 0.9731}}})
        )
        record = {
            "metrics": {"test/acc": 0.9},
            "seed": seed,
            "wall_time_s": 60.0 * (num + 1),
            "finished_at": f"2026-12-01T10:{10 * (num + 1):02d}:00+0000",
            "git": {"commit": "0123456789abcdef", "dirty": num == 3},
            "versions": {"torch": "2.13.0"},
        }
        jobs.append(job)
        records.append(record)
    provenance = collect_provenance(jobs, records)
    assert provenance.settings_lines() == [
        "method: name=kd, alpha=0.9",
        "divergence: temperature=2",
        "trainer: max_epochs=20",
    ]
    assert provenance.varying_lines() == ["divergence.name: kl, rkl"]  # the seed is left out: paired over
    assert provenance.teacher_lines() == ["MLP (cache key abc123): test acc 0.9731, used by 4 run(s)"]
    assert provenance.code_lines() == [
        "0123456789ab (clean): 3 run(s)",
        "0123456789ab (with uncommitted changes): 1 run(s)",
        "torch 2.13.0: 4 run(s)",
    ]
    # 60+120+180+240 s of runs; the first started at 10:09, the last finished at 10:40
    assert provenance.time_lines() == [
        "10.0 min of run time in all; per run 2.5 min on average (60 s to 4.0 min); "
        "31.0 min from the first start to the last finish"
    ]


def test_a_language_model_teacher_is_shown_with_its_exact_match(tmp_path):
    from divergence_lab.report.provenance import collect_provenance

    job = _job(tmp_path, 0, ["divergence=rkl"], {"test/exact_match": 0.4}, 0)
    (job / "fingerprint.json").write_text(json.dumps({"sha256": "x", "settings": {"seed": 0}}))
    teacher = {"model": "GPT2LMHeadModel", "test_metrics": {"test/exact_match": 0.905, "test/nll": 0.3}}
    (job / "teacher.json").write_text(json.dumps({"d00d": teacher}))
    provenance = collect_provenance([job], [{"metrics": {}, "seed": 0}])
    assert provenance.teacher_lines() == [
        "GPT2LMHeadModel (cache key d00d): test exact match 0.9050, used by 1 run(s)"
    ]


def test_a_search_is_compared_only_with_a_baseline_the_user_names(tmp_path):
    """An Optuna study's trials each ran their own settings: no default baseline to pair them with."""
    sweeper = "hydra_plugins.divergence_lab_plugins.optuna_sweeper.ResumableOptunaSweeper"
    (tmp_path / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    _target_: {sweeper}\n")
    for trial, (divergence, alpha) in enumerate([("kl", 0.5), ("rkl", 0.9), ("kl", 0.9)]):
        _job(tmp_path, trial, [f"divergence={divergence}", f"method.alpha={alpha}"], {"test/acc": 0.5}, 0)
    assert main([str(tmp_path), "--metrics", "test/acc"]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "No baseline: the trials of a search each ran their own settings." in markdown
    assert "baseline |" not in markdown
    assert main([str(tmp_path), "--metrics", "test/acc", "--baseline", "kl"]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "Baseline: **divergence=kl**" in markdown
    assert "| divergence=rkl, method.alpha=0.9 | 1 | 0.5000 ± n/a | n/a | +0.0000 n/a (n=1) |" in markdown
