"""Settings compared across datasets: within-dataset ranks, the Friedman test, the Nemenyi critical difference
(pinned against Demšar 2006, hand computations and scipy), the report section and the CD diagram."""

import json
import math
import random
import struct

import numpy as np
import pytest
from scipy import stats

from divergence_lab.report.across_datasets import (
    across_datasets,
    critical_difference,
    dataset_keys,
    datasets_needed,
    friedman_test,
    nemenyi_p_values,
    nemenyi_q,
    within_dataset_ranks,
)
from divergence_lab.report.across_datasets_section import across_datasets_lines
from divergence_lab.report.cd_diagram import write_cd_diagram
from divergence_lab.report.collect import collect, display_names, sweep_metrics
from divergence_lab.report.command import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Demšar (2006), Table 5(a): critical values q_0.05 of the two-tailed Nemenyi test, k = 2 ... 10
DEMSAR_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


# ---- statistics -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "q"), DEMSAR_Q05.items())
def test_nemenyi_q_is_demsars_table(k, q):
    assert nemenyi_q(k) == pytest.approx(q, abs=1e-3)


def test_critical_difference_of_demsars_worked_example():
    # four classifiers on 14 data sets: CD = 2.569 * sqrt(4 * 5 / (6 * 14)) = 1.25 (Demšar 2006, §3.2.4)
    assert critical_difference(4, 14) == pytest.approx(2.569 * math.sqrt(20 / 84), abs=1e-3)
    assert critical_difference(4, 14) == pytest.approx(1.25, abs=5e-3)
    assert critical_difference(5, 5) == pytest.approx(2.728, abs=1e-3)  # sqrt(30 / 30) = 1


def test_datasets_needed_is_where_the_largest_gap_can_exceed_cd():
    # k = 5: N > 2.728² · 30 / (6 · 16) = 2.33, so 3 datasets; CD(5, 2) = 4.31 ≥ 4 > CD(5, 3) = 3.52
    assert datasets_needed(5) == 3
    assert critical_difference(5, 2) >= 4 > critical_difference(5, 3)
    for k in range(2, 11):
        n = datasets_needed(k)
        assert critical_difference(k, n) < k - 1 <= critical_difference(k, n - 1)


def test_ranks_are_best_first_in_the_metrics_direction_and_ties_share_the_mean_rank():
    assert within_dataset_ranks([0.9, 0.8, 0.9], better=1) == [1.5, 3.0, 1.5]
    assert within_dataset_ranks([0.1, 0.3, 0.2], better=-1) == [1.0, 3.0, 2.0]  # ECE: lower is better
    with pytest.raises(ValueError, match="better must be"):
        within_dataset_ranks([0.1, 0.2], better=0)


def test_friedman_of_a_hand_computed_case():
    # R = (1, 7/3, 8/3): χ² = 12·3/(3·4) · (1 + 49/9 + 64/9) − 3·3·4 = 14/3; df = 2, so p = exp(−χ²/2)
    result = friedman_test([[1, 2, 3], [1, 3, 2], [1, 2, 3]])
    assert result.statistic == pytest.approx(14 / 3)
    assert result.dof == 2
    assert result.p_value == pytest.approx(math.exp(-7 / 3))
    scores = [[0.9, 0.8, 0.7], [0.9, 0.7, 0.8], [0.95, 0.9, 0.85]]
    reference = stats.friedmanchisquare(*zip(*scores, strict=True))
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)


def test_perfect_agreement_gives_the_largest_statistic():
    # every dataset ranks the k settings alike: χ² = N(k − 1)
    result = friedman_test([[1, 2, 3]] * 6)
    assert result.statistic == pytest.approx(12.0)
    assert result.p_value == pytest.approx(math.exp(-6.0))
    assert result.separates


@pytest.mark.parametrize("trial", range(6))
def test_friedman_with_and_without_ties_is_scipys(trial):
    rng = random.Random(trial)
    n, k = rng.randint(2, 9), rng.randint(3, 7)
    # two decimals over a narrow range: many tied values within a dataset on most trials
    scores = [[round(rng.uniform(0.8, 0.85), 2) for _ in range(k)] for _ in range(n)]
    if all(len(set(row)) == 1 for row in scores):
        scores[0][0] += 0.01
    ranks = [within_dataset_ranks(row, better=1) for row in scores]
    result = friedman_test(ranks)
    reference = stats.friedmanchisquare(*zip(*scores, strict=True))
    assert result.statistic == pytest.approx(reference.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert (result.n, result.k, result.dof) == (n, k, k - 1)


def test_no_friedman_test_without_two_datasets_or_when_everything_ties():
    assert friedman_test([[1, 2, 3]]) is None
    assert friedman_test([[1.0], [1.0]]) is None
    assert friedman_test([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]) is None


def test_nemenyi_p_values_agree_with_the_critical_difference_and_ignore_the_direction():
    rng = random.Random(7)
    n, k = 12, 5
    scores = [[rng.gauss(0.01 * j, 0.01) for j in range(k)] for _ in range(n)]
    p = nemenyi_p_values(scores, better=1)
    np.testing.assert_allclose(nemenyi_p_values(scores, better=-1), p)
    ranks = [within_dataset_ranks(row, better=1) for row in scores]
    average = [sum(column) / n for column in zip(*ranks, strict=True)]
    cd = critical_difference(k, n)
    for a in range(k):
        for b in range(a + 1, k):
            assert (p[a][b] < 0.05) == (abs(average[a] - average[b]) > cd)
    # the extremes: setting 4 is best on most datasets, setting 0 worst
    assert p[0][k - 1] < 0.05


def test_dataset_keys_are_data_choices_not_conditions():
    varying = ["divergence", "data", "data.source", "data.batch_size", "data.base.label_noise", "seed"]
    assert dataset_keys(varying) == ["data", "data.source"]
    assert dataset_keys(["data.label_noise", "method"]) == []


# ---- reports of sweep folders -----------------------------------------------------------------------------


def _job(sweep, num, overrides, metrics, seed):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))


def _sweep(folder, accuracy, datasets, settings=("kl", "rkl", "js"), seeds=(0, 1, 2), key="data"):
    """A divergence × dataset × seed sweep; test/acc = ``accuracy(dataset index, setting index, seed)``."""
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(
        "report:\n  metrics: [test/acc, test/ece]\n"
        "  display_names: {kl: forward KL, breast_cancer: breast cancer}\n"
    )
    num = 0
    for i, dataset in enumerate(datasets):
        for j, divergence in enumerate(settings):
            for seed in seeds:
                value = accuracy(i, j, seed)
                if value is not None:
                    overrides = [f"{key}={dataset}", f"divergence={divergence}", f"seed={seed}"]
                    _job(folder, num, overrides, {"test/acc": value, "test/ece": 0.05}, seed)
                num += 1
    return folder


def _report(folder):
    report = collect(folder, sweep_metrics(folder))
    report.display_names = display_names(folder)
    return report


def _separated(i, j, seed):
    # js > rkl > kl on every one of 6 datasets: χ² = N(k − 1) = 12; CD = 2.343·sqrt(12/36) = 1.35
    return 0.8 + 0.01 * i + 0.02 * [0, 1, 2][j] + 0.001 * seed


SIX = ("digits", "wine", "breast_cancer", "iris", "synthetic", "moons")


def test_a_sweep_across_datasets_ranks_tests_and_draws(tmp_path, capsys):
    folder = _sweep(tmp_path / "sweep", _separated, SIX)
    analysis = across_datasets(_report(folder))
    assert analysis.metric == "test/acc" and analysis.dataset_keys == ["data"]
    assert analysis.settings == ["forward KL", "rkl", "js"]
    assert analysis.datasets[2] == "breast cancer"
    assert analysis.means[2][0] == pytest.approx(0.841)  # mean over seeds 0, 1, 2 of 0.84 + 0.001·seed
    assert analysis.average_ranks == [3.0, 2.0, 1.0]
    assert analysis.friedman.statistic == pytest.approx(12.0)
    assert analysis.critical_difference == pytest.approx(2.343 * math.sqrt(1 / 3), abs=1e-3)

    lines = across_datasets_lines(_report(folder))
    text = "\n".join(lines)
    assert lines[0] == "## Across datasets" and lines[-1] == ""
    assert "| divergence | digits | wine | breast cancer | iris | synthetic | moons | average rank |" in lines
    assert lines[lines.index("|---|---|---|---|---|---|---|---|") + 1].startswith("| js | 0.8410 (1) ★ |")
    assert next(line for line in lines if line.startswith("| forward KL |")).endswith("| 3.00 |")
    assert "χ²_F = 12 (df = 2), p = 0.00248 (< 0.05)" in text
    assert "CD = q_α · √(k(k+1)/(6N)) = 2.344 · √(3·4/(6·6)) = 1.35" in text
    assert "Pairs that differ (Nemenyi): js over forward KL (ΔR = 2.00" in text
    assert "no other pair is separated" in text and "could not separate" not in text

    assert main([str(folder)]) == 0
    assert "report_cd.png" in capsys.readouterr().out
    image = (folder / "report_cd.png").read_bytes()
    assert image[:8] == PNG_SIGNATURE
    width, height = struct.unpack(">II", image[16:24])  # the IHDR chunk
    assert 8 * 120 <= width <= 12 * 120 and height > 100
    assert "![report_cd](report_cd.png)" in across_datasets_lines(_report(folder))


def test_datasets_the_study_cannot_separate_are_said_so(tmp_path):
    def disagreeing(i, j, seed):
        return 0.9 + 0.01 * ((i + j) % 3) + 0.001 * seed  # ranks (3, 2, 1) on digits, (2, 1, 3) on wine

    folder = _sweep(tmp_path / "sweep", disagreeing, ("digits", "wine"))
    text = "\n".join(across_datasets_lines(_report(folder)))
    # R = (2.5, 1.5, 2): χ² = 12·2/(3·4) · 12.5 − 3·2·4 = 1, p = exp(−1/2) = 0.607
    assert "χ²_F = 1 (df = 2), p = 0.607 (≥ 0.05): **the study could not separate them**" in text
    assert "little power" in text
    # CD = 2.344 · √(12/12) ≥ k − 1 = 2: three datasets are the fewest that could separate two settings
    assert "no pair can be separated with 2 datasets (it takes at least 3)" in text
    assert "Pairs that differ" not in text
    assert write_cd_diagram(_report(folder), tmp_path / "cd.png")
    assert (tmp_path / "cd.png").read_bytes()[:8] == PNG_SIGNATURE


def test_a_dataset_where_a_setting_did_not_finish_is_shown_but_not_ranked(tmp_path):
    def unfinished(i, j, seed):
        return None if (i, j) == (3, 1) else _separated(i, j, seed)

    folder = _sweep(tmp_path / "sweep", unfinished, SIX[:4])
    analysis = across_datasets(_report(folder))
    assert analysis.unranked == ["iris"] and analysis.friedman.n == 3
    text = "\n".join(across_datasets_lines(_report(folder)))
    assert "Not ranked or tested (a setting has no finished run there): iris." in text
    assert "| rkl | 0.8210 (2) | 0.8310 (2) | 0.8410 (2) | — |" in text


def test_one_dataset_gets_no_section_and_no_figure(tmp_path, capsys):
    folder = _sweep(tmp_path / "sweep", _separated, ("digits",))
    assert across_datasets(_report(folder)) is None
    assert across_datasets_lines(_report(folder)) == []
    assert not write_cd_diagram(_report(folder), tmp_path / "cd.png")
    assert main([str(folder)]) == 0
    assert "report_cd.png" not in capsys.readouterr().out
    assert not (folder / "report_cd.png").exists()


def test_a_varying_condition_such_as_the_batch_size_is_no_dataset(tmp_path):
    folder = _sweep(tmp_path / "sweep", _separated, ("16", "64", "256"), key="data.batch_size")
    assert across_datasets_lines(_report(folder)) == []


def test_only_datasets_varying_is_nothing_to_rank(tmp_path):
    folder = _sweep(tmp_path / "sweep", _separated, SIX, settings=("kl",))
    assert across_datasets_lines(_report(folder)) == []


def test_settings_of_two_keys_are_named_by_both_and_long_names_are_cut_in_the_figure(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    num = 0
    for i, dataset in enumerate(("digits", "wine", "iris")):
        for j, temperature in enumerate(("1", "4", "0.123456789")):
            for divergence in ("kl", "hellinger"):
                overrides = [
                    f"data={dataset}",
                    f"divergence={divergence}",
                    f"divergence.temperature={temperature}",
                ]
                _job(folder, num, [*overrides, "seed=0"], {"test/acc": 0.9 - 0.01 * j + 0.001 * i}, 0)
                num += 1
    analysis = across_datasets(_report(folder))
    assert analysis.setting_keys == ["divergence", "divergence.temperature"]
    assert analysis.settings[:2] == [
        "divergence=kl, divergence.temperature=1",
        "divergence=hellinger, divergence.temperature=1",
    ]
    lines = across_datasets_lines(_report(folder))
    assert "| divergence / divergence.temperature | digits | wine | iris | average rank |" in lines
    assert "n = 1 seed per cell" in lines[2]
    assert "divergence=hellinger, divergence.temperature=0.1235" in analysis.settings  # 51 characters
    assert write_cd_diagram(_report(folder), tmp_path / "cd.png")
    width, _ = struct.unpack(">II", (tmp_path / "cd.png").read_bytes()[16:24])
    assert width <= 12 * 120
