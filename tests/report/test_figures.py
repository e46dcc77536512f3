"""The report's figures on constructed run folders with known numbers: the numbers each figure draws
(per-epoch means and stds, merged attempts, shared accuracy ranges, reliability counts, layouts) and
what a reader sees of them (axis labels, legends outside the panels, text size, image size)."""

import csv
import json
import statistics
import struct

import matplotlib.pyplot as plt
import pytest
from matplotlib.text import Text

from divergence_lab.ground.epoch_log import csv_files, read_epoch_metrics
from divergence_lab.report import curves, forest, lines, plots, reliability
from divergence_lab.report.collect import collect
from divergence_lab.report.comparison import compare, resolve_baseline
from divergence_lab.report.curves import curve_metrics, curve_panels, write_curves
from divergence_lab.report.figure_style import (
    DPI,
    MAX_WIDTH_IN,
    MIN_WIDTH_IN,
    accuracy_range,
    axis_ranges,
    group_label,
    short_number,
    value_label,
)
from divergence_lab.report.lines import write_line_plot
from divergence_lab.report.plots import bar_layout, write_plot
from divergence_lab.report.reliability import (
    FEW_SAMPLES,
    bin_points,
    reliability_panels,
    write_reliability_grid,
)
from divergence_lab.report.reliability import (
    _title as reliability_title,
)

MIN_FONT_PT = 8


def _job(sweep, num, overrides, metrics, seed=0):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))
    return job


def _write_csv(job, per_epoch, name="metrics.csv"):
    """A Lightning CSV log: per epoch a training row, then the validation row of its own, then a test row."""
    columns = [
        "epoch",
        "step",
        "train/loss_step",
        "test/acc",
        *sorted({m for v in per_epoch.values() for m in v}),
    ]
    (job / "csv").mkdir(exist_ok=True)
    with (job / "csv" / name).open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        for epoch, values in per_epoch.items():
            writer.writerow({"epoch": epoch, "step": 10 * epoch + 9, "train/loss_step": 2.0})
            writer.writerow({"epoch": epoch, "step": 10 * epoch + 9, **values})
        last = max(per_epoch, default=0) + 1
        writer.writerow({"epoch": last, "step": 10 * last, "test/acc": 0.5})


def _sweep(tmp_path, name="sweep"):
    folder = tmp_path / "study" / name
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text("{}\n")
    return folder


VAL_ACC = {
    "kl": [[0.5, 0.6, 0.7], [0.7, 0.8, 0.9], [0.6, 0.7, 0.8]],
    "rkl": [[0.2, 0.3, 0.4], [0.4, 0.5, 0.6]],
}


@pytest.fixture
def curve_sweep(tmp_path):
    """kl: 3 seeds, rkl: 2 seeds, val/acc and val/nll for 3 epochs each (val/nll = 1 - val/acc)."""
    folder = _sweep(tmp_path)
    num = 0
    for divergence, runs in VAL_ACC.items():
        for seed, accs in enumerate(runs):
            job = _job(
                folder, num, [f"divergence={divergence}", f"seed={seed}"], {"test/acc": accs[-1]}, seed
            )
            _write_csv(job, {e: {"val/acc": a, "val/nll": 1 - a} for e, a in enumerate(accs)})
            num += 1
    return folder


@pytest.fixture
def drawn(monkeypatch):
    """The figures the report draws, by file name, kept open for inspection (and written as usual)."""
    figures = {}

    def keep(fig, path):
        fig.savefig(path, dpi=DPI)
        figures[path.name] = fig

    for module in (plots, reliability, curves, lines, forest):
        monkeypatch.setattr(module, "save", keep)
    yield figures
    for fig in figures.values():
        plt.close(fig)


def _png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def _check_readable(fig, path):
    """A PNG of the figure's own size, 8 to 12 inches wide; legends outside the panels; text >= 8 pt."""
    width, height = _png_size(path)
    intended = fig.get_size_inches() * DPI
    assert abs(width - intended[0]) < 1 and abs(height - intended[1]) < 1  # whole pixels
    assert MIN_WIDTH_IN * DPI <= width <= MAX_WIDTH_IN * DPI
    assert all(ax.get_legend() is None for ax in fig.axes)  # no legend drawn inside a panel
    texts = [text for text in fig.findobj(Text) if text.get_text() and text.get_visible()]
    assert min(text.get_fontsize() for text in texts) >= MIN_FONT_PT


# --- per-epoch curves -------------------------------------------------------------------------------


def test_curves_are_mean_and_sample_std_over_seeds_per_epoch(curve_sweep):
    report = collect(curve_sweep, ["test/acc", "test/nll"])
    panels, note = curve_panels(report)
    assert [panel.metric for panel in panels] == ["val/acc", "val/nll"] and note == ""
    kl = panels[0].lines["kl"]
    assert kl.epochs.tolist() == [1, 2, 3]  # counted from 1: epoch e = after e epochs
    assert kl.mean.tolist() == pytest.approx([0.6, 0.7, 0.8])
    assert kl.std.tolist() == pytest.approx([statistics.stdev([0.5, 0.7, 0.6])] * 3)  # = 0.1
    assert kl.runs == 3
    rkl = panels[1].lines["rkl"]  # val/nll = 1 - val/acc
    assert rkl.mean.tolist() == pytest.approx([0.7, 0.6, 0.5])
    assert rkl.std.tolist() == pytest.approx([statistics.stdev([0.8, 0.6])] * 3)
    assert rkl.runs == 2


def test_curve_panels_are_val_acc_and_the_reported_metrics_val_counterparts_that_were_logged():
    logged = {"val/acc", "val/nll", "train/loss", "train/distill", "val/teacher_acc"}
    reported = ["test/nll", "test/ece", "wall_time_s", "test/teacher_acc"]
    assert curve_metrics(reported, logged) == [
        "train/loss",
        "train/distill",
        "val/acc",
        "val/nll",
        "val/teacher_acc",
    ]
    assert curve_metrics(["test/acc"], {"train/ce"}) == []


def test_training_terms_selected_epochs_and_a_zoom_where_curves_flatten(tmp_path, drawn):
    folder = _sweep(tmp_path)
    for seed in range(2):
        job = _job(folder, seed, ["divergence=kl", f"seed={seed}"], {"test/acc": 0.5}, seed)
        record = json.loads((job / "metrics.json").read_text())
        (job / "metrics.json").write_text(json.dumps({**record, "selected_epoch": 7 + seed}))
        # accuracy climbs for 4 epochs, then stays within 0.005: flattened
        accs = [0.3, 0.6, 0.8, 0.9, 0.902, 0.903, 0.904, 0.902, 0.905, 0.904]
        _write_csv(job, {e: {"val/acc": a, "train/loss_epoch": 2 - e / 5} for e, a in enumerate(accs)})
    report = collect(folder, ["test/acc"])
    panels, _ = curve_panels(report)
    assert [panel.metric for panel in panels] == ["train/loss", "val/acc"]  # the _epoch suffix dropped
    assert panels[1].selected == {"all runs": [7, 8]} and panels[1].saturated()
    assert not panels[0].saturated()  # a steady decline: not flat
    path = folder / "report_curves.png"
    assert write_curves(report, path)
    fig = drawn[path.name]
    loss_ax, acc_ax = fig.axes
    (inset,) = acc_ax.child_axes
    assert not loss_ax.child_axes
    dotted = [line.get_xdata()[0] for line in acc_ax.get_lines() if line.get_linestyle() == ":"]
    assert dotted == [7, 8]
    assert inset.get_xlim() == (7, 10) and inset.get_ylim()[0] > 0.85  # the last third, fitted


def test_a_later_attempts_rows_replace_an_earlier_ones_for_the_epochs_both_hold(tmp_path):
    job = _job(tmp_path, 0, ["seed=0"], {"test/acc": 0.5})
    _write_csv(job, {0: {"val/acc": 0.1}, 1: {"val/acc": 0.2}, 2: {"val/acc": 0.3}}, "metrics.attempt-0.csv")
    _write_csv(job, {2: {"val/acc": 0.4}, 3: {"val/acc": 0.5}}, "metrics.attempt-10.csv")
    _write_csv(job, {2: {"val/acc": 0.6}}, "metrics.attempt-2.csv")  # between attempts 0 and 10
    _write_csv(job, {3: {"val/acc": 0.7}, 4: {"val/acc": 0.8}})  # the current attempt: metrics.csv
    names = [path.name for path in csv_files(job)]
    assert names == [
        "metrics.attempt-0.csv",
        "metrics.attempt-2.csv",
        "metrics.attempt-10.csv",
        "metrics.csv",
    ]
    assert read_epoch_metrics(job)["val/acc"] == {1: 0.1, 2: 0.2, 3: 0.4, 4: 0.7, 5: 0.8}


def test_a_group_curve_covers_the_epochs_all_its_runs_logged(tmp_path):
    folder = _sweep(tmp_path)
    for seed, epochs in enumerate((3, 2)):  # the second run stopped early
        job = _job(folder, seed, ["divergence=kl", f"seed={seed}"], {"test/acc": 0.5}, seed)
        _write_csv(job, {e: {"val/acc": 0.1 * (e + 1)} for e in range(epochs)})
    (panel,), _ = curve_panels(collect(folder, ["test/acc"]))
    assert panel.lines["all runs"].epochs.tolist() == [1, 2]


def test_gcd_sweeps_get_old_new_all_panels_and_no_repeated_val_accuracy(tmp_path):
    folder = _sweep(tmp_path)
    for seed in range(2):
        job = _job(folder, seed, ["method=legogcd", f"seed={seed}"], {"test/acc": 0.5}, seed)
        rows = [{"epoch": e, "acc_old": 0.8, "acc_new": 0.4 + 0.1 * seed, "acc_all": 0.6} for e in range(2)]
        (job / "gcd_curve.json").write_text(json.dumps(rows))
        _write_csv(job, {e: {"val/acc": 0.6, "val/acc_old": 0.8, "val/nll": 1.0} for e in range(2)})
    panels, _ = curve_panels(collect(folder, ["test/acc", "test/acc_old", "test/nll"]))
    assert [panel.metric for panel in panels] == ["acc_old", "acc_new", "acc_all", "val/nll"]
    new = panels[1].lines["all runs"]
    assert new.mean.tolist() == pytest.approx([0.45, 0.45])
    assert new.std.tolist() == pytest.approx([statistics.stdev([0.4, 0.5])] * 2)


def test_curve_figure_is_written_with_arrows_and_the_group_sizes_in_its_legend(curve_sweep, drawn):
    report = collect(curve_sweep, ["test/acc", "test/nll"])
    path = curve_sweep / "report_curves.png"
    assert write_curves(report, path)
    fig = drawn[path.name]
    _check_readable(fig, path)
    assert [ax.get_ylabel() for ax in fig.axes] == ["val accuracy (↑ better)", "val NLL (↓ better)"]
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["kl (n=3)", "rkl (n=2)"]
    assert fig.axes[0].get_ylim() == pytest.approx(accuracy_range([(0.1, 0.9)]))


def test_no_curve_figure_without_per_epoch_logs(tmp_path):
    folder = _sweep(tmp_path)
    _job(folder, 0, ["divergence=kl", "seed=0"], {"test/acc": 0.5})
    assert not write_curves(collect(folder, ["test/acc"]), folder / "report_curves.png")
    assert not (folder / "report_curves.png").exists()


# --- axis ranges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intervals", "expected"),
    [
        ([(0.918, 0.922), (0.923, 0.927)], (0.90, 0.95)),  # a 0.5-point gap on a 5-point axis
        ([(0.85, 0.87)], (0.80, 0.90)),  # the floor is strictly below the lowest mean - std
        ([(0.93, 0.999), (0.95, 1.0)], (0.90, 1.0)),  # never above 1
        ([(0.30, 0.35), (0.80, 0.90)], (0.0, 0.95)),  # spread over more than 0.25: from 0
        ([(0.02, 0.08)], (0.0, 0.10)),
    ],
)
def test_accuracy_range_starts_from_a_rounded_floor_or_zero(intervals, expected):
    assert accuracy_range(intervals) == pytest.approx(expected)


def test_accuracy_panels_share_one_range_and_other_metrics_start_at_zero():
    ranges = axis_ranges(
        {
            "test/acc": [(0.90, 0.92)],
            "test/teacher_acc": [(0.95, 0.97)],
            "test/ece": [(0.02, 0.05), (0.03, 0.10)],
            "test/gap": [(-0.2, 0.1)],
            "test/nll": [],
        }
    )
    assert ranges["test/acc"] == ranges["test/teacher_acc"] == pytest.approx((0.85, 1.0))
    assert ranges["test/ece"] == pytest.approx((0.0, 0.10 * 1.08))
    assert ranges["test/gap"] is None and ranges["test/nll"] is None  # matplotlib's own range


# --- labels and the bar chart -----------------------------------------------------------------------


def test_long_decimals_are_rounded_in_labels_and_display_names_apply(tmp_path):
    assert short_number("divergence.temperature=0.123456789012, method.alpha=0.5") == (
        "divergence.temperature=0.1235, method.alpha=0.5"
    )
    assert short_number("layer2.weight=12345.678901, t=1e-05") == "layer2.weight=1.235e+04, t=1e-05"
    folder = _sweep(tmp_path)
    for num, (divergence, temperature) in enumerate([("kl", "0.123456789012"), ("js", "2.5")]):
        _job(folder, num, [f"divergence={divergence}", f"divergence.temperature={temperature}", "seed=0"], {})
    report = collect(folder, ["test/acc"])
    report.display_names = {"kl": "forward KL"}
    assert [group_label(report, group) for group in report.groups] == [
        "forward KL, divergence.temperature=0.1235",
        "divergence=js, divergence.temperature=2.5",
    ]
    assert value_label(report, "divergence", "kl") == "forward KL"
    assert value_label(report, "divergence.temperature", "0.123456789012") == "divergence.temperature=0.1235"


def _grid_sweep(tmp_path):
    folder = _sweep(tmp_path)
    num = 0
    for divergence, base in (("kl", 0.90), ("js", 0.92)):
        for temperature in ("1", "4"):
            for seed in range(2):
                metrics = {"test/acc": base + 0.01 * seed, "test/ece": 0.05}
                overrides = [
                    f"divergence={divergence}",
                    f"divergence.temperature={temperature}",
                    f"seed={seed}",
                ]
                _job(folder, num, overrides, metrics, seed)
                num += 1
    return folder


def test_a_two_key_grid_is_grouped_bars_with_key_value_ticks(tmp_path, drawn):
    folder = _grid_sweep(tmp_path)
    report = collect(folder, ["test/acc", "test/ece"])
    layout = bar_layout(report)
    assert layout.kind == "grouped"
    assert layout.categories == ["divergence.temperature=1", "divergence.temperature=4"]
    assert layout.hues == ["divergence=kl", "divergence=js"]
    path = folder / "report.png"
    write_plot(report, compare(report, resolve_baseline(report, "kl")), path)
    fig = drawn[path.name]
    _check_readable(fig, path)
    acc, ece = fig.axes
    assert not acc.patches  # dots, no bars
    assert [tick.get_text() for tick in acc.get_xticklabels()] == layout.categories
    assert acc.get_ylabel() == "test accuracy (↑ better)" and ece.get_ylabel() == "test ECE (↓ better)"
    assert acc.get_ylim() == pytest.approx((0.85, 0.95))  # means ± std within 0.893 ... 0.937
    assert ece.get_ylim()[0] == 0
    assert [text.get_text() for text in fig.legends[0].get_texts()] == layout.hues


def test_one_key_sweeps_get_one_bar_per_group_named_by_the_key(tmp_path):
    folder = _sweep(tmp_path)
    for num, divergence in enumerate(("kl", "rkl", "js")):
        _job(folder, num, [f"divergence={divergence}", "seed=0"], {"test/acc": 0.5})
    layout = bar_layout(collect(folder, ["test/acc"]))
    assert (layout.kind, layout.categories, layout.axis_name) == ("bars", ["kl", "rkl", "js"], "divergence")


def test_few_groups_with_labels_too_long_for_a_bar_are_ranked(tmp_path):
    """A 4-trial search over three keys: its labels cannot stand under vertical bars."""
    folder = _sweep(tmp_path)
    for trial, (divergence, temperature, alpha) in enumerate(
        [("kl", 2.003473011863325, 0.95020202534), ("rkl", 5.52125879146, 0.4938284901364)]
    ):
        overrides = [
            f"divergence={divergence}",
            f"divergence.temperature={temperature}",
            f"method.alpha={alpha}",
        ]
        _job(folder, trial, [*overrides, "seed=0"], {"test/acc": 0.8 - trial / 2})
    layout = bar_layout(collect(folder, ["test/acc"]))
    assert layout.kind == "ranked"
    assert layout.categories[0] == "divergence=kl, divergence.temperature=2.003, method.alpha=0.9502"


def test_many_groups_are_ranked_best_first_and_cut_with_a_note(tmp_path, drawn):
    folder = _sweep(tmp_path)
    for trial in range(30):
        temperature = 1 + trial / 7  # long decimals, like an Optuna trial's
        _job(
            folder,
            trial,
            [f"divergence.temperature={temperature}", "seed=0"],
            {"test/ece": 0.01 * (trial % 13)},
        )
    report = collect(folder, ["test/ece"])
    layout = bar_layout(report)
    assert layout.kind == "ranked" and len(layout.categories) == 25
    eces = [layout.cells[(row, 0)].summary("test/ece")[0] for row in range(25)]
    assert eces == sorted(eces)  # lower ECE is better: best first
    assert layout.note == "sorted by test/ece, best first; best 25 of 30 groups"
    assert "1.143" in layout.categories  # 1 + 1/7, rounded to 4 significant digits
    assert all(len(label) <= len("1.143") for label in layout.categories)
    path = folder / "report.png"
    write_plot(report, compare(report, None), path)
    _check_readable(drawn[path.name], path)
    assert drawn[path.name].axes[0].get_xlabel() == "test ECE (↓ better)"


# --- reliability diagrams ---------------------------------------------------------------------------


def test_reliability_panels_carry_the_pooled_counts_and_mark_sparse_bins(tmp_path, drawn):
    folder = _sweep(tmp_path)
    bins = {"edges": [0.0, 0.5, 1.0], "count": [1, 40], "confidence": [0.3, 0.8], "accuracy": [0.0, 0.75]}
    for seed in range(2):
        job = _job(folder, seed, ["divergence=kl", f"seed={seed}"], {"test/acc": 0.7}, seed)
        (job / "reliability.json").write_text(json.dumps({"model": bins}))
    report = collect(folder, ["test/acc"])
    (panel,), note = reliability_panels(report)
    points = bin_points(panel.networks["model"])
    assert [(p.count, p.few) for p in points] == [(2, True), (80, False)]  # 2 < FEW_SAMPLES samples
    assert FEW_SAMPLES > 2 and note == ""
    path = folder / "report_reliability.png"
    assert write_reliability_grid(report, path)
    fig = drawn[path.name]
    _check_readable(fig, path)
    curve_ax, counts_ax = fig.axes
    assert [bar.get_height() for bar in counts_ax.patches] == [2, 80]
    assert counts_ax.get_ylabel() == "samples" and counts_ax.get_yscale() == "log"
    assert curve_ax.get_title() == f"all runs\npooled ECE {panel.networks['model']['ece']:.3f}"
    assert "bin of < 10 samples" in [text.get_text() for text in fig.legends[0].get_texts()]


def test_reliability_titles_give_the_per_seed_ece_beside_the_pooled_one(tmp_path):
    folder = _sweep(tmp_path)
    bins = {"edges": [0.0, 0.5, 1.0], "count": [10, 40], "confidence": [0.3, 0.8], "accuracy": [0.2, 0.75]}
    for seed, ece in enumerate((0.02, 0.04)):
        job = _job(folder, seed, ["divergence=kl", f"seed={seed}"], {"test/ece": ece}, seed)
        (job / "reliability.json").write_text(json.dumps({"model": bins}))
    (panel,), _ = reliability_panels(collect(folder, ["test/ece"]))
    title = reliability_title(panel)
    assert title.endswith(f"pooled ECE {panel.networks['model']['ece']:.3f}\nper seed 0.030 ± 0.014")
    panel.networks["teacher"] = {**panel.networks["model"], "ece": 0.5}
    assert f"pooled ECE {panel.networks['model']['ece']:.3f} (teacher 0.500)\n" in reliability_title(panel)


# --- metrics against a numeric key ------------------------------------------------------------------


def test_line_plot_ticks_are_the_swept_values_on_a_log_axis_without_minor_labels(tmp_path, drawn):
    folder = _sweep(tmp_path)
    num = 0
    for variant in ("cts", "snip"):
        for density in ("0.005", "0.01", "0.03", "0.1"):
            for seed in range(2):
                overrides = [f"+v={variant}", f"method.density={density}", f"seed={seed}"]
                _job(folder, num, overrides, {"test/acc": 0.8 + 0.01 * seed, "test/ece": 0.1}, seed)
                num += 1
    report = collect(folder, ["test/acc", "test/ece"])
    path = folder / "report_lines.png"
    assert write_line_plot(report, path) == "method.density"
    fig = drawn[path.name]
    _check_readable(fig, path)
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert ax.get_xticks().tolist() == pytest.approx([0.005, 0.01, 0.03, 0.1])
        assert [tick.get_text() for tick in ax.get_xticklabels()] == ["0.005", "0.01", "0.03", "0.1"]
        assert not any(tick.get_text() for tick in ax.get_xticklabels(minor=True))
    assert [ax.get_ylabel() for ax in fig.axes] == ["test accuracy (↑ better)", "test ECE (↓ better)"]
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["v=cts", "v=snip"]


def test_no_line_plot_when_every_line_would_be_one_point(tmp_path):
    folder = _sweep(tmp_path)
    for trial in range(4):  # Optuna-like: every trial draws new values of every key
        overrides = [f"divergence.temperature={1 + trial / 3}", f"method.alpha={0.1 + trial / 9}", "seed=0"]
        _job(folder, trial, overrides, {"test/acc": 0.5})
    assert write_line_plot(collect(folder, ["test/acc"]), folder / "report_lines.png") is None
    assert not (folder / "report_lines.png").exists()
