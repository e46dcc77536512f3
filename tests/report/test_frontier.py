"""The frontier (``report.frontier``): curves, budget and interpolation against hand-computed numbers on a
constructed sweep folder, the figure's drawn data, and the report files with and without the setting."""

import json
import math
import statistics
from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import yaml
from scipy import optimize, stats

from divergence_lab.report import frontier
from divergence_lab.report.collect import collect
from divergence_lab.report.command import main
from divergence_lab.report.comparison import resolve_baseline
from divergence_lab.report.errors import ReportError
from divergence_lab.report.figure_style import DPI
from divergence_lab.report.frontier import (
    ALONG_MARKERS,
    FRONTIER_FILE,
    FrontierCurve,
    FrontierPoint,
    FrontierSpec,
    along_markers,
    budget_tests,
    common_budget,
    frontier_answer_lines,
    frontier_curves,
    frontier_lines,
    is_monotone,
    parse_spec,
    seeds_at,
    value_at,
    write_frontier,
)
from divergence_lab.report.statistics import Settings
from divergence_lab.report.tables import FIGURES

X, REWARD, PASS = "test/kl_reverse_seq", "test/reward", "test/pass@16_exact"
BETA = "method.regulariser.beta"
SPEC = {"x": X, "y": [REWARD, PASS], "along": BETA}
NAMES = {"kl": "forward KL", "tv": "total variation"}
# (regulariser, beta or None) -> per seed (x, reward, pass@16_exact); means: kl (2.0, 0.8, 0.7) at β = 0.1,
# (0.5, 0.5, 0.4) at β = 1.0; tv (1.0, 0.9, 0.6) and (0.2, 0.3, 0.2); none (no β): (5.0, 0.95, 0.9)
RUNS = {
    ("kl", "0.1"): [(1.9, 0.7, 0.6), (2.0, 0.8, 0.7), (2.1, 0.9, 0.8)],
    ("kl", "1.0"): [(0.4, 0.4, 0.3), (0.5, 0.5, 0.4), (0.6, 0.6, 0.5)],
    ("tv", "0.1"): [(0.9, 0.85, 0.5), (1.0, 0.9, 0.6), (1.1, 0.95, 0.7)],
    ("tv", "1.0"): [(0.1, 0.2, 0.1), (0.2, 0.3, 0.2), (0.3, 0.4, 0.3)],
    ("none", None): [(4.0, 0.9, 0.85), (5.0, 0.95, 0.9), (6.0, 1.0, 0.95)],
}


def _sweep(tmp_path, report, runs_by_group=RUNS):
    folder = tmp_path / "rl_divergences" / "2026-01-01_00-00-00-000000"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(yaml.safe_dump({"report": report}))
    num = 0
    for (regulariser, beta), runs in runs_by_group.items():
        for seed, (x, reward, passed) in enumerate(runs):
            job = folder / str(num)
            (job / ".hydra").mkdir(parents=True)
            overrides = [
                f"+rl_regulariser={regulariser}",
                *([f"{BETA}={beta}"] if beta else []),
                f"seed={seed}",
            ]
            (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
            metrics = {X: x, REWARD: reward, PASS: passed}
            (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))
            num += 1
    return folder


@pytest.fixture
def report(tmp_path):
    sweep = _sweep(tmp_path, {"metrics": [REWARD]})
    collected = collect(sweep, [REWARD])  # x and pass@16_exact are not reported metrics: read from the runs
    collected.display_names = NAMES
    return collected


def test_curves_group_by_the_other_keys_in_increasing_along(report):
    curves = frontier_curves(report, parse_spec({"frontier": SPEC}))
    assert [c.label for c in curves] == ["forward KL", "total variation", "none"]
    assert [[p.along for p in c.points] for c in curves] == [["0.1", "1.0"], ["0.1", "1.0"], [None]]
    kl = curves[0]
    assert [p.mean(X) for p in kl.points] == pytest.approx([2.0, 0.5])
    assert [p.mean(PASS) for p in kl.points] == pytest.approx([0.7, 0.4])
    ci = kl.points[0].summaries[REWARD].ci  # mean ± t_{0.975, 2} · s / √3, s = 0.1
    half = stats.t.ppf(0.975, 2) * statistics.stdev([0.7, 0.8, 0.9]) / math.sqrt(3)
    assert ci == pytest.approx((0.8 - half, 0.8 + half))


def test_budget_and_interpolation_match_hand_computed_values(report):
    spec = parse_spec({"frontier": SPEC})
    curves = frontier_curves(report, spec)
    budget = common_budget(curves, spec)
    # lo = max(kl's smallest x 0.5, tv's 0.2), hi = min(kl's largest x 2.0, tv's 1.0); none has one point
    assert budget == pytest.approx(math.sqrt(0.5 * 1.0))
    lines = "\n".join(frontier_lines(report, spec))
    # kl between (2.0; reward 0.8, pass 0.7) and (0.5; 0.5, 0.4);
    # tv between (1.0; 0.9, 0.6) and (0.2; 0.3, 0.2)
    kl_reward, kl_pass = (0.8 + (budget - 2.0) * (0.5 - 0.8) / (0.5 - 2.0), 0.7 + (budget - 2.0) * 0.2)
    tv_reward, tv_pass = (0.9 + (budget - 1.0) * 0.75, 0.6 + (budget - 1.0) * (0.2 - 0.6) / (0.2 - 1.0))
    assert f"| forward KL | 2 | 0.5000 – 2.0000 | {kl_reward:.4f} | {kl_pass:.4f} |" in lines
    assert f"| total variation | 2 | 0.2000 – 1.0000 | {tv_reward:.4f} | {tv_pass:.4f} |" in lines
    assert "| none | 1 | 5.0000 | n/a | n/a |" in lines
    assert (
        f"Budget: `{X}` = {budget:.4f}, the geometric middle √(lo · hi) of the range that the most" in lines
    )


def test_a_set_budget_replaces_the_rule(report):
    spec = parse_spec({"frontier": {**SPEC, "budget": 0.5}})
    lines = "\n".join(frontier_lines(report, spec))
    # kl at its β = 1 point; tv: 0.9 + (0.5 − 1)(0.3 − 0.9)/(0.2 − 1) = 0.525,
    # 0.6 + (−0.5)(−0.4)/(−0.8) = 0.35
    assert "| forward KL | 2 | 0.5000 – 2.0000 | 0.5000 | 0.4000 |" in lines
    assert "| total variation | 2 | 0.2000 – 1.0000 | 0.5250 | 0.3500 |" in lines
    assert "set by `report.frontier.budget`" in lines


def test_value_at_reads_the_first_crossing_in_along_order():
    assert value_at([1.0, 3.0, 2.0], [10.0, 30.0, 20.0], 2.5) == pytest.approx(25.0)  # not 25 via (3, 2)
    assert value_at([3.0, 1.0, 2.0], [30.0, 10.0, 20.0], 1.5) == pytest.approx(15.0)
    assert value_at([3.0, 1.0], [30.0, 10.0], 3.0) == 30.0
    assert value_at([3.0, 1.0], [30.0, 10.0], 0.5) is None
    assert value_at([3.0], [30.0], 2.0) is None
    assert is_monotone([3.0, 2.0, 2.0]) and not is_monotone([1.0, 3.0, 2.0])


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("kl", "expected a mapping"),
        ({"x": X, "along": BETA}, "report.frontier.y"),
        ({**SPEC, "budget": "high"}, "report.frontier.budget"),
        ({**SPEC, "alnog": BETA}, "unknown key(s) alnog"),
    ],
)
def test_malformed_settings_are_refused(setting, message):
    with pytest.raises(ReportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_spec({"frontier": setting})


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({**SPEC, "x": "test/kl_reverse"}, "did you mean 'test/kl_reverse_seq'"),
        ({**SPEC, "along": "method.beta"}, "'method.beta' is not a swept key"),
        ({**SPEC, "along": "rl_regulariser"}, "rl_regulariser='kl' is not a number"),
    ],
)
def test_dlab_report_refuses_a_frontier_the_sweep_cannot_draw(tmp_path, capsys, setting, message):
    sweep = _sweep(tmp_path, {"metrics": [REWARD], "frontier": setting})
    assert main([str(sweep)]) == 2
    assert message in capsys.readouterr().err
    assert not (sweep / "report.md").exists()


def test_the_figure_draws_each_curve_with_its_bars_and_labels(report, tmp_path, monkeypatch):
    kept = {}

    def keep(fig, path):
        fig.savefig(path, dpi=DPI)
        kept["fig"] = fig

    monkeypatch.setattr(frontier, "save", keep)
    path = tmp_path / FRONTIER_FILE
    assert write_frontier(report, parse_spec({"frontier": SPEC}), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = kept["fig"]
    reward, passed = fig.axes[:2]
    assert (reward.get_xlabel(), reward.get_ylabel()) == (
        "test KL(policy ‖ reference) per sequence",
        "test reward (↑ better)",
    )
    assert passed.get_ylabel().startswith("test pass@16 exact")
    lines = {line.get_label(): line for line in reward.get_lines() if not line.get_label().startswith("_")}
    budget = lines.pop(f"table's budget: {math.sqrt(0.5):.4f}")
    assert list(budget.get_xdata()) == pytest.approx([math.sqrt(0.5)] * 2)
    assert list(lines) == ["forward KL", "total variation", "none"]
    assert list(lines["forward KL"].get_xdata()) == pytest.approx([2.0, 0.5])  # β = 0.1, then β = 1.0
    assert list(lines["forward KL"].get_ydata()) == pytest.approx([0.8, 0.5])
    assert lines["none"].get_marker() == "D" and lines["none"].get_linestyle() == "None"
    shapes = [
        (line.get_marker(), line.get_color())
        for line in reward.get_lines()
        if line.get_marker() in ("o", "s")
    ]
    kl_color = lines["forward KL"].get_color()
    assert shapes[:2] == [("o", kl_color), ("s", kl_color)]  # β = 0.1: the first shape, β = 1.0: the second
    assert len(reward.texts) == 0  # two β values: told apart by shape, not by text
    assert reward.get_xscale() == "log"  # means from 0.2 to 5
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "forward KL",
        "total variation",
        "none",
        f"table's budget: {math.sqrt(0.5):.4f}",
        "beta = 0.1",
        "beta = 1",
    ]
    plt.close(fig)


def test_a_drawn_frontier_is_in_every_report_file_and_goes_when_unset(tmp_path):
    sweep = _sweep(tmp_path, {"metrics": [REWARD], "display_names": NAMES, "frontier": SPEC})
    assert main([str(sweep)]) == 0
    assert (sweep / FRONTIER_FILE).is_file()
    markdown = (sweep / "report.md").read_text()
    assert f"![report_frontier]({FRONTIER_FILE})" in markdown
    kl_reward = 0.8 + (math.sqrt(0.5) - 2.0) * 0.2  # at the default budget √(0.5 · 1.0)
    assert f"| forward KL | 2 | 0.5000 – 2.0000 | {kl_reward:.4f} |" in markdown
    page = (sweep / "report.html").read_text()
    assert f'alt="{FRONTIER_FILE}"' in page and f"<td>{kl_reward:.4f}</td>" in page
    assert FRONTIER_FILE in [name for name, _, _ in FIGURES]

    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"report": {"metrics": [REWARD], "frontier": None}}))
    assert main([str(sweep)]) == 0
    assert not (sweep / FRONTIER_FILE).exists()  # the stale figure is removed
    with_null = (sweep / "report.md").read_text()
    assert FRONTIER_FILE not in with_null and "At equal" not in with_null
    assert FRONTIER_FILE not in (sweep / "report.html").read_text()

    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"report": {"metrics": [REWARD]}}))
    assert main([str(sweep)]) == 0
    assert (sweep / "report.md").read_text() == with_null  # absent and null: the same report


def test_no_spec_no_figure_no_section(report, tmp_path):
    assert not write_frontier(report, None, tmp_path / FRONTIER_FILE)
    assert not (tmp_path / FRONTIER_FILE).exists()
    assert frontier_lines(report, None) == []
    assert parse_spec({}) is None and parse_spec({"frontier": None}) is None


def test_spec_accepts_one_metric_and_strips_a_plus():
    spec = parse_spec({"frontier": {"x": X, "y": REWARD, "along": f"+{BETA}"}})
    assert spec == FrontierSpec(X, (REWARD,), BETA)


def test_more_along_values_than_shapes_are_labelled_with_text(report):
    many = [FrontierPoint(str(0.1 * i), report.groups[0]) for i in range(len(ALONG_MARKERS) + 1)]
    assert along_markers([FrontierCurve("kl", many)]) is None
    few = along_markers([FrontierCurve("kl", many[:3][::-1]), FrontierCurve("none", [many[5]])])
    assert few == {"0.0": "o", "0.1": "s", "0.2": "^"}  # increasing; a one-point curve has no shape


# --- the test at the budget ---------------------------------------------------------------------------------

# Six seeds; each group's second point (β = 1.0) is (x, reward) = (0, 0) on every seed, so a seed whose first
# point (β = 0.1) is (x, r) with x ≥ 1 reads r / x at the budget B = 1: r + (1 − x)(0 − r)/(0 − x) = r / x.
# rkl (the baseline) at B: 0.3, 0.5, 0.6, n/a (x = 0.8 < 1), 0.4, 0.45
# kl: 0.4, 0.6, n/a (x = 0.5), 0.5, 0.7, 0.6;  tv: 0.3, 0.4, 0.5, 0.6, 0.4, 0.5
FIRST_POINTS = {
    "rkl": [(2.0, 0.6), (1.0, 0.5), (1.25, 0.75), (0.8, 0.9), (2.0, 0.8), (1.0, 0.45)],
    "kl": [(4.0, 1.6), (2.0, 1.2), (0.5, 0.9), (1.6, 0.8), (1.0, 0.7), (2.5, 1.5)],
    "tv": [(1.0, 0.3), (2.0, 0.8), (2.0, 1.0), (2.0, 1.2), (2.0, 0.8), (2.0, 1.0)],
}
AT_BUDGET = {
    "rkl": {0: 0.3, 1: 0.5, 2: 0.6, 3: None, 4: 0.4, 5: 0.45},
    "kl": {0: 0.4, 1: 0.6, 2: None, 3: 0.5, 4: 0.7, 5: 0.6},
    "tv": {0: 0.3, 1: 0.4, 2: 0.5, 3: 0.6, 4: 0.4, 5: 0.5},
}
TESTED_RUNS = {
    (name, beta): [(x, r, r) if beta == "0.1" else (0.0, 0.0, 0.0) for x, r in firsts]
    for name, firsts in FIRST_POINTS.items()
    for beta in ("0.1", "1.0")
}
TESTED_SPEC = {"x": X, "y": [REWARD], "along": BETA, "budget": 1.0}
MDE_BRACKET = 10  # the root's bracket in SDs of Δ: four pairs detect ten SDs with near certainty


def _tested(tmp_path, **report):
    sweep = _sweep(tmp_path, {"metrics": [REWARD], "frontier": TESTED_SPEC, **report}, TESTED_RUNS)
    return sweep, collect(sweep, [REWARD])


def _paired(group, base):
    seeds = [s for s in group if group[s] is not None and base[s] is not None]
    return [group[s] for s in seeds], [base[s] for s in seeds]


def _holm(p_values):
    """Holm's step-down adjustment, written out: the i-th smallest p times (k − i), running maximum."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _paired_t_mde(sd, pairs, alpha, power):
    """The |Δ| whose two-sided paired t-test at ``alpha`` has ``power``: the noncentral t, solved directly."""
    critical = stats.t.ppf(1 - alpha / 2, pairs - 1)

    def shortfall(effect):
        shift = effect / sd * math.sqrt(pairs)
        # P(T' > c) + P(T' < −c), the second as P(−T' > c): −T' is noncentral t of shift −δ√m
        reach = stats.nct.sf(critical, pairs - 1, shift) + stats.nct.sf(critical, pairs - 1, -shift)
        return reach - power

    return optimize.brentq(shortfall, 1e-3 * sd, MDE_BRACKET * sd)


def test_each_seed_is_read_on_its_own_curve(report):
    spec = parse_spec({"frontier": SPEC})
    kl, tv, none = frontier_curves(report, spec)
    # kl, seed 0: 0.7 + (1 − 1.9)(0.4 − 0.7)/(0.4 − 1.9) = 0.52; seed 1: 0.6; seed 2: 0.9 − 1.1 · 0.3 / 1.5
    assert seeds_at(report, kl, spec, REWARD, 1.0) == pytest.approx({0: 0.52, 1: 0.6, 2: 0.68})
    # tv: seed 0's x (0.9, 0.1) stays below B = 1; seed 1 sits on it; seed 2: 0.95 − 0.1 · 0.55 / 0.8
    at = seeds_at(report, tv, spec, PASS, 1.0)
    assert at[0] is None
    assert [at[1], at[2]] == pytest.approx([0.6, 0.7 - 0.1 * 0.4 / 0.8])
    assert seeds_at(report, none, spec, REWARD, 1.0) == {0: None, 1: None, 2: None}  # one point, x ≠ B


def test_a_seed_short_of_the_budget_is_left_out_and_counted(report):
    spec = parse_spec({"frontier": {**SPEC, "budget": 1.0}})
    baseline = resolve_baseline(report, "kl")
    (test, _) = budget_tests(report, spec, baseline, {})
    kl, tv, none = test.comparison.rows
    assert test.seeds == [3, 3, 3]
    assert tv.per_seed == pytest.approx({1: 0.9, 2: 0.95 - 0.1 * 0.55 / 0.8})  # seed 0 does not reach B
    assert tv.difference.n_pairs == 2 and tv.difference.unpaired_seeds == (0,)
    assert tv.verdict.word == "not tested (n=2 < 3)"
    assert kl.is_baseline and kl.difference is None and none.counterpart_missing is False
    assert none.difference is None and none.summary is None  # no seed of it reaches B: nothing to pair
    lines = "\n".join(frontier_lines(report, spec, baseline, {}))
    assert "| total variation | 2/3 | 0.8906 ± 0.0133 | " in lines
    assert "| none | 0/3 | — | no seed reaches B on both |" in lines
    assert "total variation: seed(s) 0 reach B on its baseline curve only, left out of Δ." in lines


def test_the_paired_test_at_the_budget_is_scipys_on_the_interpolated_values(tmp_path):
    _, report = _tested(tmp_path)
    spec = parse_spec({"frontier": TESTED_SPEC})
    (test,) = budget_tests(report, spec, resolve_baseline(report, "rkl"), {REWARD: Settings()})
    rows = {row.label: row for row in test.comparison.rows}
    for name in ("rkl", "kl", "tv"):
        reached = {seed: value for seed, value in AT_BUDGET[name].items() if value is not None}
        assert rows[name].per_seed == pytest.approx(reached)
    references = [stats.ttest_rel(*_paired(AT_BUDGET[name], AT_BUDGET["rkl"])) for name in ("kl", "tv")]
    kl, tv = rows["kl"].difference, rows["tv"].difference
    assert (kl.n_pairs, tv.n_pairs) == (4, 5)  # kl: seeds 2 and 3 out; tv: seed 3 out
    assert [kl.p_value, tv.p_value] == pytest.approx([r.pvalue for r in references], rel=1e-12)
    assert [kl.p_adjusted, tv.p_adjusted] == pytest.approx(_holm([r.pvalue for r in references]))
    group, base = _paired(AT_BUDGET["kl"], AT_BUDGET["rkl"])
    d = [g - b for g, b in zip(group, base, strict=True)]
    half = stats.t.ppf(0.975, 3) * statistics.stdev(d) / 2
    assert kl.mean == pytest.approx(statistics.fmean(d))
    assert kl.ci == pytest.approx((kl.mean - half, kl.mean + half))
    assert kl.mde == pytest.approx(_paired_t_mde(statistics.stdev(d), 4, 0.05 / 2, 0.8), rel=1e-4)


@pytest.mark.parametrize(
    ("correction", "verdict"),
    [
        ("holm", "no difference detected (could detect ≥ {mde})"),  # p ≈ 0.042, Holm-corrected ≈ 0.083
        ("none", "better"),
    ],
)
def test_the_verdict_at_the_budget_is_written_in_the_reports_words(tmp_path, correction, verdict):
    sweep, report = _tested(tmp_path, baseline="rkl", correction=correction)
    assert main([str(sweep)]) == 0
    markdown = (sweep / "report.md").read_text()
    spec, baseline = parse_spec({"frontier": TESTED_SPEC}), resolve_baseline(report, "rkl")
    (test,) = budget_tests(report, spec, baseline, {REWARD: Settings(correction=correction)})
    kl = next(row for row in test.comparison.rows if row.label == "kl")
    word = verdict.format(mde=f"{kl.difference.mde:.4f}")
    assert kl.verdict.word == word
    assert "### Tested at `test/kl_reverse_seq` = 1.0000" in markdown
    assert "Per-seed interpolation for the test" in markdown
    header = "| group | n seeds at B | mean at B ± std | Δ vs baseline [95% CI] | p (paired t) |"
    assert header in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| kl | 5/6 | 0.5600 ± 0.1140 | "))
    assert row.endswith(f"| {word} |") and "+0.1625 [" in row and "(n=4)" in row
    assert "| rkl | 5/6 | 0.4500 ± 0.1118 | baseline |" in markdown
    assert "- kl: seed(s) 2 reach B on its baseline curve only, left out of Δ." in markdown
    assert "- kl: seed(s) 3 reach B on this curve only, left out of Δ." in markdown
    answer = markdown.split("## Answer", 1)[1].split("\n\n", 2)[1]
    line = next(line for line in answer.splitlines() if "at equal" in line)
    assert line.startswith("- **test reward (↑ better)** at equal `test/kl_reverse_seq` = 1.0000 (per-seed")
    undetected = "no difference detected: kl, tv (could detect ≥ "
    assert ("better: kl" if correction == "none" else undetected) in line
    page = (sweep / "report.html").read_text()
    assert "Tested at" in page and "at equal <code>test/kl_reverse_seq</code>" in page


def test_a_baseline_along_the_curves_leaves_nothing_to_test(tmp_path):
    _, report = _tested(tmp_path)
    spec = parse_spec({"frontier": TESTED_SPEC})
    baseline = resolve_baseline(report, f"{BETA}=0.1")
    assert budget_tests(report, spec, baseline, {}) == []
    assert frontier_answer_lines(report, spec, baseline, {}) == []
    assert "is a value of `method.regulariser.beta`: no curve to test" in "\n".join(
        frontier_lines(report, spec, baseline, {})
    )


def test_a_group_that_along_does_not_move_is_a_point_not_a_range_of_the_budget(tmp_path):
    """A group swept over ``along`` whose runs do not depend on it (no regulariser at every β) has one x
    however many points it has: it does not narrow the budget's range to nothing."""
    none_at_every_beta = {key: runs for key, runs in RUNS.items() if key[0] != "none"}
    for beta in ("0.1", "1.0"):
        none_at_every_beta[("none", beta)] = RUNS[("none", None)]
    sweep = _sweep(tmp_path, {"metrics": [REWARD]}, none_at_every_beta)
    collected = collect(sweep, [REWARD])
    spec = parse_spec({"frontier": SPEC})
    assert common_budget(frontier_curves(collected, spec), spec) == pytest.approx(math.sqrt(0.5 * 1.0))


def test_the_budget_is_in_the_range_the_most_curves_share():
    """Three curves over x in [0.1, 1], [0.5, 2] and [3, 9]: the first two overlap on [0.5, 1], the third
    overlaps neither; B = √(0.5 · 1)."""
    spec = parse_spec({"frontier": SPEC})

    def curve(xs):  # the budget reads only each point's mean of x
        return SimpleNamespace(points=[SimpleNamespace(mean=lambda metric, x=x: x) for x in xs])

    curves = [curve([1.0, 0.1]), curve([2.0, 0.5]), curve([9.0, 3.0])]
    assert common_budget(curves, spec) == pytest.approx(math.sqrt(0.5))
