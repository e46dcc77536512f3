"""The report's statistics against hand-computed numbers, and how the report shows them.

Student's t with 2 degrees of freedom has a closed form, ``F(t) = 1/2 + t / (2 sqrt(2 + t²))``, so the
3-seed cases below are checked without scipy: the 97.5 % quantile is ``sqrt(2 q² / (1 − q²))`` with
``q = 2 · 0.475``, and the two-sided p-value of ``t`` is ``1 − t / sqrt(2 + t²)``.
"""

import csv
import json
import math
import statistics

import pytest

from divergence_lab.report.collect import collect
from divergence_lab.report.command import main
from divergence_lab.report.comparison import compare, resolve_baseline
from divergence_lab.report.errors import ReportError
from divergence_lab.report.statistics import (
    Settings,
    adjust,
    correct,
    minimum_detectable_effect,
    paired_difference,
    seeds_needed,
    smallest_attainable_p,
    summarise,
)
from divergence_lab.report.tables import p_text
from divergence_lab.report.verdicts import paired_ranks, verdict

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


def test_fewer_than_three_pairs_are_never_tested_and_get_no_interval():
    difference = paired_difference({0: 0.5, 1: 0.7}, {0: 0.4, 1: 0.5})
    assert difference.n_pairs == 2 and difference.p_value is None and not difference.tested
    assert difference.mean == pytest.approx(0.15)
    assert difference.ci is None and difference.mde is None  # one degree of freedom says nothing
    assert difference.untested_reason == "n=2 < 3"
    assert summarise([0.5, 0.7]).ci is None


def test_identical_differences_have_no_p_value_and_no_zero_width_interval():
    difference = paired_difference({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.4, 1: 0.5, 2: 0.6})
    assert difference.p_value is None and difference.mean == pytest.approx(0.1)
    assert difference.ci is None
    assert difference.untested_reason == "the same Δ on every seed"


def test_differences_equal_up_to_float_rounding_are_not_tested():
    # -0.025 on every seed, as float subtraction leaves it: the SD is ~1e-17, not 0
    group, base = {0: 0.1, 1: 0.2, 2: 0.3}, {0: 0.125, 1: 0.225, 2: 0.325}
    assert statistics.stdev([group[s] - base[s] for s in range(3)]) > 0
    difference = paired_difference(group, base)
    assert not difference.tested and difference.ci is None
    assert difference.untested_reason == "the same Δ on every seed"
    assert summarise([0.1 + 0.2, 0.3, 0.3]).ci is None


def test_seeds_needed_for_an_effect_three_seeds_already_detect():
    # δ / SD = 20: three pairs have power ~1, and statsmodels' solver has no root below them
    assert seeds_needed(0.02, 0.001, 0.05, 0.8) == 3
    assert seeds_needed(1e-9, 1.0, 0.05, 0.8) is None  # out of reach: more than MAX_SEEDS_NEEDED


def test_no_shared_seed_gives_no_difference():
    assert paired_difference({0: 0.5}, {1: 0.5}) is None


def test_holm_and_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.20]
    # Holm: sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, made monotone: 0.04, 0.09, 0.09, 0.20
    assert adjust(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.20])
    # BH: p_(i) * m / i from the largest down, running minimum: 0.2, 0.04*4/3, 0.03*4/2 -> 0.0533.., 0.04
    assert adjust(p, "bh") == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20])
    assert adjust(p, "none") == p


def test_correct_replaces_only_tested_p_values():
    tested = paired_difference(RKL, KL)
    untested = paired_difference({0: 0.5, 1: 0.7}, {0: 0.4, 1: 0.5})
    corrected = correct([tested, untested, None, tested], "holm")
    assert corrected[0].p_adjusted == pytest.approx(min(1.0, 2 * tested.p_value))
    assert corrected[1].p_adjusted is None and corrected[2] is None


def test_wilcoxon_exact_p_by_hand():
    # five positive differences: the exact two-sided signed-rank p is 2 / 2^5 = 0.0625, its smallest value
    group = {s: 0.9 + 0.01 * s + 0.001 * (s + 1) for s in range(5)}
    base = {s: 0.9 + 0.01 * s for s in range(5)}
    difference = paired_difference(group, base, Settings(test="wilcoxon"))
    assert difference.p_value == pytest.approx(0.0625)
    assert smallest_attainable_p("wilcoxon", 5) == pytest.approx(0.0625)
    # it can never reach 0.05 with five pairs: the MDE is infinite and the verdict says so
    assert difference.mde == math.inf
    assert verdict(difference, 1, Settings(test="wilcoxon")).word == "not detectable with n=5 (wilcoxon test)"


def test_sign_flip_p_and_bootstrap_interval_are_seeded_and_exact():
    group = {s: 0.9 + 0.01 * s + d for s, d in enumerate([0.01, 0.02, -0.005, 0.015, 0.03, 0.01])}
    base = {s: 0.9 + 0.01 * s for s in range(6)}
    settings = Settings(test="bootstrap")
    first, second = paired_difference(group, base, settings), paired_difference(group, base, settings)
    assert first == second  # the resampler is seeded
    # 2^6 = 64 sign patterns; |Σ| >= the observed 0.08: the observed one, the one with -0.005 flipped to
    # +0.005 (Σ = 0.09), and their two mirrors: p = 4/64
    assert first.p_value == pytest.approx(4 / 64)
    d = [0.01, 0.02, -0.005, 0.015, 0.03, 0.01]
    assert min(d) <= first.ci[0] < sum(d) / 6 < first.ci[1] <= max(d)


def test_minimum_detectable_effect_by_noncentral_t():
    from scipy import stats

    sd, n, alpha = 0.0105, 5, 0.05
    mde = minimum_detectable_effect(sd, n, alpha, 0.8)
    # power of the two-sided one-sample t-test at the MDE, from the noncentral t distribution: 0.8
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = mde / sd * math.sqrt(n)
    power = 1 - stats.nct.cdf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift)
    assert power == pytest.approx(0.8, abs=1e-6)
    assert mde == pytest.approx(0.0176, abs=2e-4)  # ≈ 1.75 pt for the default study's SD of Δ
    needed = seeds_needed(0.01, sd, alpha, 0.8)
    assert needed == 11  # 10 pairs have power < 0.8 at 0.01, 11 reach it
    for pairs, reaches in ((needed - 1, False), (needed, True)):
        c = stats.t.ppf(1 - alpha / 2, pairs - 1)
        nc = 0.01 / sd * math.sqrt(pairs)
        assert (1 - stats.nct.cdf(c, pairs - 1, nc) + stats.nct.cdf(-c, pairs - 1, nc) >= 0.8) == reaches


def test_holm_sets_the_per_comparison_alpha_of_the_mde():
    assert Settings().per_comparison_alpha(4) == pytest.approx(0.0125)
    assert Settings(correction="none").per_comparison_alpha(4) == 0.05
    difference = paired_difference(RKL, KL, Settings(), comparisons=4)
    sd = difference.sd
    assert difference.mde == pytest.approx(minimum_detectable_effect(sd, 3, 0.0125, 0.8))


def test_tost_by_hand():
    # differences 0.001, -0.002, 0.0015, 0.0005, -0.001: mean 0, well inside ±0.01
    d = [0.001, -0.002, 0.0015, 0.0005, -0.001]
    group = {s: 0.9 + v for s, v in enumerate(d)}
    base = {s: 0.9 for s in range(5)}
    difference = paired_difference(group, base, Settings(equivalence_margin=0.01))
    mean = sum(d) / 5
    se = math.sqrt(sum((v - mean) ** 2 for v in d) / 4) / math.sqrt(5)
    from scipy import stats

    p_low = 1 - stats.t.cdf((mean + 0.01) / se, 4)
    p_high = stats.t.cdf((mean - 0.01) / se, 4)
    assert difference.tost_p == pytest.approx(max(p_low, p_high), rel=1e-6)
    (corrected,) = correct([difference], "holm")
    assert verdict(corrected, 1, Settings(equivalence_margin=0.01), "{:.2f}".format).word == (
        "equivalent within ±0.01"
    )


def test_verdict_words():
    settings = Settings()
    worse = correct([paired_difference(RKL, KL)], "holm")[0]  # p = 0.013
    assert verdict(worse, 1, settings).word == "worse"
    assert verdict(worse, -1, settings).word == "better"  # lower is better: a negative Δ wins
    assert verdict(worse, 0, settings).word == "lower"
    noisy = correct([paired_difference({0: 0.9, 1: 0.95, 2: 0.91}, {0: 0.91, 1: 0.92, 2: 0.92})], "holm")[0]
    word = verdict(noisy, 1, settings, "{:.3f}".format).word
    assert word == f"no difference detected (could detect ≥ {noisy.mde:.3f})"


def test_bounded_metric_interval_is_clipped_and_marked():
    summary = summarise([0.001, 0.002, 0.03], bounds=(0.0, 1.0))
    assert summary.ci[0] == 0.0 and summary.clipped
    assert not summarise([0.4, 0.5, 0.6], bounds=(0.0, 1.0)).clipped


def test_ranks_come_from_paired_tests_against_the_best():
    # a and b overlap in their intervals but b is below a on every seed by a steady margin: separated
    per_seed = {
        "a": {0: 0.90, 1: 0.95, 2: 0.92, 3: 0.97, 4: 0.93},
        "b": {0: 0.88, 1: 0.931, 2: 0.899, 3: 0.951, 4: 0.909},
        "c": {0: 0.91, 1: 0.93, 2: 0.93, 3: 0.96, 4: 0.92},  # mixed signs against a: tied
    }
    means = {k: sum(v.values()) / 5 for k, v in per_seed.items()}
    ranks = paired_ranks(per_seed, means, 1, Settings())
    assert [ranks[k].describe() for k in "acb"] == ["1=", "1=", "3"]
    assert [ranks[k].position for k in "acb"] == [1, 2, 3]
    assert paired_ranks(per_seed, means, 0, Settings()) == {}


def test_one_seed_ranks_are_not_tested():
    ranks = paired_ranks({"a": {0: 0.9}, "b": {0: 0.8}}, {"a": 0.9, "b": 0.8}, 1, Settings())
    assert [ranks[k].describe() for k in "ab"] == ["1=", "1="]
    assert not ranks["a"].tested and not ranks["b"].tested


def test_p_values_never_round_onto_the_level():
    assert p_text(0.05002, 0.05) == "0.05002"
    assert p_text(0.04996, 0.05) == "0.04996"
    assert p_text(0.0123, 0.05) == "0.0123"
    assert p_text(0.0004, 0.05) == "< 0.001"


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
    assert "Fewer than 3 paired seeds: no interval, no test, no claim" in markdown
    assert "One seed per group: the order is not tested" in markdown
    assert "[0.9" not in markdown and "[+0.0" not in markdown  # no interval anywhere


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
    assert (
        "| divergence=rkl, method.alpha=0.9 | 1 | 0.5000 ± n/a | n/a | +0.0000 (no CI) (n=1) | 0/1 | — | — |"
        in markdown
    )
