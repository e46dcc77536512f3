"""dlab-report A B ...: sweeps whose fixed settings agree are reported as one, seeds pooled; others are
refused in one line, with nothing written."""

import json
from pathlib import Path

import pytest

from divergence_lab.report.collect import collect_sweeps
from divergence_lab.report.command import main, prepare
from divergence_lab.report.errors import ReportError
from divergence_lab.report.merging import read_sweep_settings

FIXED = {"trainer.max_epochs": 1, "method.name": "kd", "divergence.temperature": 2.0, "divergence.name": "kl"}
REPORT_FILES = ("report.md", "report.csv", "report.png")


def accuracy(divergence: str, seed: int) -> float:
    return {"kl": 0.9, "rkl": 0.8, "js": 0.7}[divergence] + 0.01 * seed


def make_sweep(
    folder: Path,
    divergences: list[str],
    seeds: list[int],
    fixed: dict | None = None,
    extra: list[str] = (),
    fingerprint: bool = True,
) -> Path:
    """A sweep folder as ``dlab -m`` leaves it: job folders, multirun.yaml and the sweep fingerprint."""
    folder.mkdir(parents=True)
    (folder / "multirun.yaml").write_text("report:\n  display_names: {kl: forward KL}\n")
    settings = {**FIXED, **(fixed or {})}
    swept = {"sweep:divergence": ",".join(divergences)} if len(divergences) > 1 else {}
    if fingerprint:
        record = {"sha256": "x", "settings": {**settings, **swept, "sweep:seed": ",".join(map(str, seeds))}}
        (folder / "sweep_fingerprint.json").write_text(json.dumps(record))
    number = 0
    for divergence in divergences:
        for seed in seeds:
            job = folder / str(number)
            (job / ".hydra").mkdir(parents=True)
            overrides = [f"divergence={divergence}", f"seed={seed}", *extra]
            (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
            metrics = {"test/acc": accuracy(divergence, seed), "test/ece": 0.1}
            (job / "metrics.json").write_text(json.dumps({"metrics": metrics, "seed": seed}))
            job_settings = {**settings, "divergence.name": divergence, "seed": seed}
            (job / "fingerprint.json").write_text(json.dumps({"sha256": "y", "settings": job_settings}))
            number += 1
    return folder


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for folder in folders
        for path in sorted(folder.rglob("*"))
    }


def refused(capsys, argv: list[str], *folders: Path) -> str:
    """Run dlab-report on ``argv``; assert exit code 2, one line on stderr and nothing written."""
    before = snapshot(*folders)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlab-report: error: ") and len(err.strip().splitlines()) == 1
    assert snapshot(*folders) == before
    return err


def test_two_sweeps_of_other_seeds_report_as_one_with_their_seeds_pooled(tmp_path, capsys):
    first = make_sweep(tmp_path / "a", ["kl", "rkl"], [0, 1])
    second = make_sweep(tmp_path / "b", ["kl", "rkl"], [2, 3], extra=["paths.output_root=/elsewhere"])
    assert main([str(first), str(second)]) == 0
    out = capsys.readouterr().out
    assert f"in {first}" in out
    report = prepare([first, second], None).sweep
    assert report.sweep_dir == first and report.sweeps == [first, second]
    assert [g.key for g in report.groups] == [(("divergence", "kl"),), (("divergence", "rkl"),)]
    for group in report.groups:
        assert sorted(group.seeds) == [0, 1, 2, 3]
        assert len(group.values["test/acc"]) == 4
        divergence = group.key[0][1]
        mean = group.summary("test/acc")[0]
        assert mean == pytest.approx(sum(accuracy(divergence, s) for s in range(4)) / 4)
    assert report.varying == ["divergence"] and report.display_names == {"kl": "forward KL"}
    markdown = (first / "report.md").read_text()
    assert "| forward KL | 4 |" in markdown
    assert f"Merged sweeps (fixed settings agree): `{first}`, `{second}`" in markdown
    assert not any((second / name).exists() for name in REPORT_FILES)  # written into the first sweep only


def test_a_sweep_holding_a_swept_key_fixed_merges_as_one_more_group(tmp_path):
    grid = make_sweep(tmp_path / "a", ["kl", "rkl"], [0, 1])
    single = make_sweep(tmp_path / "b", ["js"], [0, 1], fixed={"divergence.name": "js"})
    report = collect_sweeps([grid, single], ["test/acc"])
    labels = [group.label(report.varying) for group in report.groups]
    assert labels == ["kl", "rkl", "js"]
    assert [sorted(group.seeds) for group in report.groups] == [[0, 1]] * 3


def test_other_fixed_settings_are_refused_in_one_line_naming_the_keys(tmp_path, capsys):
    first = make_sweep(tmp_path / "a", ["kl", "rkl"], [0, 1])
    other = make_sweep(
        tmp_path / "b", ["kl", "rkl"], [2, 3], fixed={"trainer.max_epochs": 2, "method.alpha": 0.5}
    )
    err = refused(capsys, [str(first), str(other)], first, other)
    assert f"cannot merge {first} and {other}: their fixed settings differ" in err
    assert "method.alpha: (unset) -> 0.5; trainer.max_epochs: 1 -> 2" in err


def test_a_seed_with_other_results_in_two_sweeps_is_refused(tmp_path, capsys):
    first = make_sweep(tmp_path / "a", ["kl", "rkl"], [0, 1])
    clash = make_sweep(tmp_path / "b", ["kl", "rkl"], [1, 2])
    job = clash / "0"  # kl, seed 1: another result than the first sweep's
    (job / "metrics.json").write_text(json.dumps({"metrics": {"test/acc": 0.1, "test/ece": 0.1}, "seed": 1}))
    err = refused(capsys, [str(first), str(clash)], first, clash)
    assert f"divergence=kl, seed 1 ran in both {first / '1'} and {job} with different results" in err


def test_the_same_run_in_two_sweeps_counts_once(tmp_path):
    first = make_sweep(tmp_path / "a", ["kl", "rkl"], [0, 1])
    overlapping = make_sweep(tmp_path / "b", ["kl", "rkl"], [1, 2])  # seed 1: the same results
    report = collect_sweeps([first, overlapping], ["test/acc"])
    assert [sorted(group.seeds) for group in report.groups] == [[0, 1, 2], [0, 1, 2]]
    assert collect_sweeps([first, tmp_path / "a" / ".." / "a"], ["test/acc"]).sweeps == [first]


def test_sweeps_without_a_sweep_fingerprint_are_read_from_their_jobs(tmp_path, capsys):
    first = make_sweep(tmp_path / "a", ["kl", "rkl"], [0, 1], fingerprint=False)
    second = make_sweep(tmp_path / "b", ["kl", "rkl"], [2], fingerprint=False)
    settings = read_sweep_settings(first)
    assert settings.swept == {"divergence.name", "seed"} and settings.fixed["trainer.max_epochs"] == 1
    assert [len(g.seeds) for g in collect_sweeps([first, second], ["test/acc"]).groups] == [3, 3]
    other = make_sweep(tmp_path / "c", ["kl", "rkl"], [5], fixed={"trainer.max_epochs": 3}, fingerprint=False)
    assert "trainer.max_epochs: 1 -> 3" in refused(capsys, [str(first), str(other)], first, other)
    bare = make_sweep(tmp_path / "d", ["kl"], [7], fingerprint=False)
    for job in bare.glob("*/fingerprint.json"):
        job.unlink()
    assert "records no fixed settings" in refused(capsys, [str(first), str(bare)], first, bare)


def test_a_search_is_not_merged(tmp_path, capsys):
    first = make_sweep(tmp_path / "a", ["kl", "rkl"], [0, 1])
    search = make_sweep(tmp_path / "b", ["kl", "rkl"], [2, 3])
    (search / "multirun.yaml").write_text("hydra:\n  sweeper:\n    _target_: x.ResumableOptunaSweeper\n")
    with pytest.raises(ReportError, match="a hyperparameter search"):
        collect_sweeps([first, search], ["test/acc"])
    assert "a hyperparameter search" in refused(capsys, [str(first), str(search)], first, search)
