"""The frontier (``report.frontier``): curves, budget and interpolation against hand-computed numbers on a
constructed sweep folder, the figure's drawn data, and the report files with and without the setting."""

import json
import math
import statistics

import matplotlib.pyplot as plt
import pytest
import yaml
from scipy import stats

from divergence_lab.report import frontier
from divergence_lab.report.collect import collect
from divergence_lab.report.command import main
from divergence_lab.report.errors import ReportError
from divergence_lab.report.figure_style import DPI
from divergence_lab.report.frontier import (
    ALONG_MARKERS,
    FRONTIER_FILE,
    FrontierCurve,
    FrontierPoint,
    FrontierSpec,
    along_markers,
    common_budget,
    frontier_curves,
    frontier_lines,
    is_monotone,
    parse_spec,
    value_at,
    write_frontier,
)
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


def _sweep(tmp_path, report):
    folder = tmp_path / "rl_divergences" / "2026-01-01_00-00-00-000000"
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text(yaml.safe_dump({"report": report}))
    num = 0
    for (regulariser, beta), runs in RUNS.items():
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
    assert budget == pytest.approx(1.0)  # min(kl's largest x 2.0, tv's 1.0); none has one point
    lines = "\n".join(frontier_lines(report, spec))
    # kl: 0.8 + (1 − 2)(0.5 − 0.8)/(0.5 − 2) = 0.6 reward, 0.7 + (−1)(−0.3)/(−1.5) = 0.5 pass;
    # tv: its point at x = 1
    assert "| forward KL | 2 | 0.5000 – 2.0000 | 0.6000 | 0.5000 |" in lines
    assert "| total variation | 2 | 0.2000 – 1.0000 | 0.9000 | 0.6000 |" in lines
    assert "| none | 1 | 5.0000 | n/a | n/a |" in lines
    assert f"Budget: `{X}` = 1.0000, the largest value every curve" in lines


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
    assert (reward.get_xlabel(), reward.get_ylabel()) == ("test kl reverse seq", "test reward")
    assert passed.get_ylabel().startswith("test pass@16 exact")
    lines = {line.get_label(): line for line in reward.get_lines() if not line.get_label().startswith("_")}
    budget = lines.pop("table's budget: 1.0000")
    assert list(budget.get_xdata()) == pytest.approx([1.0, 1.0])
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
        "forward KL", "total variation", "none", "table's budget: 1.0000", "beta = 0.1", "beta = 1"
    ]  # fmt: skip
    plt.close(fig)


def test_a_drawn_frontier_is_in_every_report_file_and_goes_when_unset(tmp_path):
    sweep = _sweep(tmp_path, {"metrics": [REWARD], "display_names": NAMES, "frontier": SPEC})
    assert main([str(sweep)]) == 0
    assert (sweep / FRONTIER_FILE).is_file()
    markdown = (sweep / "report.md").read_text()
    assert f"![report_frontier]({FRONTIER_FILE})" in markdown
    assert "| forward KL | 2 | 0.5000 – 2.0000 | 0.6000 | 0.5000 |" in markdown
    page = (sweep / "report.html").read_text()
    assert f'alt="{FRONTIER_FILE}"' in page and "<td>0.6000</td>" in page
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
