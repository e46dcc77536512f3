"""A sweep folder grows: more seeds (or more values of a swept key) run only the new jobs, each earlier job
keeps its folder, and the report sees the grown grid; any other change is refused in one line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from divergence_lab.entry.preflight import preflight
from divergence_lab.ground.errors import ConfigError
from divergence_lab.report.collect import collect
from divergence_lab.sweep.growth import GROWTH_KEY, record_sweep, spec_values, sweep_change
from divergence_lab.sweep.job_folders import job_numbers, numbered_batches

BIN = Path(sys.executable).parent
FIXED = {"trainer.max_epochs": 1, "method.name": "kd"}


def grid(divergence: str = "kl,rkl", seed: str = "0,1", **fixed) -> dict:
    return {**FIXED, **fixed, "sweep:divergence": divergence, "sweep:seed": seed}


def jobs(divergences: list[str], seeds: list[int]) -> list[list[str]]:
    """The jobs of a grid in Hydra's order, as their overrides."""
    return [[f"divergence={d}", f"seed={s}", "trainer.max_epochs=1"] for d in divergences for s in seeds]


def write_jobs(sweep: Path, grid_jobs: list[list[str]]) -> None:
    for number, overrides in enumerate(grid_jobs):
        (sweep / str(number) / ".hydra").mkdir(parents=True)
        (sweep / str(number) / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_spec_values_enumerate_what_the_grid_sweeper_enumerates():
    assert spec_values("seed", "0,1") == ["0", "1"] == spec_values("seed", "range(0,2)")
    assert spec_values("divergence", "choice(kl,rkl)") == ["kl", "rkl"]
    assert spec_values("method.alpha", "interval(0.1, 1.0)") is None
    assert spec_values("seed", "range(0,") is None


def test_more_values_of_the_swept_keys_grow_the_sweep():
    assert sweep_change(grid(), grid()) == (None, [])
    assert sweep_change(grid(), grid(seed="range(0,2)", divergence="rkl,kl")) == (None, [])  # same values
    growth, problems = sweep_change(grid(), grid(divergence="kl,rkl,js", seed="range(0,5)"))
    assert problems == []
    assert growth.added == {"divergence": ["js"], "seed": ["2", "3", "4"]}
    assert (growth.jobs_before, growth.jobs_after) == (4, 15)
    assert "divergence + js; seed + 2, 3, 4; 4 -> 15 jobs" in growth.describe(Path("sweep"))


@pytest.mark.parametrize(
    ("new", "named"),
    [
        (grid(seed="0"), 'sweep:seed: "0,1" -> "0" (without 1)'),
        (grid(seed="0,2"), 'sweep:seed: "0,1" -> "0,2" (without 1)'),
        (grid(seed="0,1,2", **{"trainer.max_epochs": 2}), "trainer.max_epochs: 1 -> 2"),
        ({**grid(), "sweep:method.alpha": "0.1,0.5"}, 'sweep:method.alpha: (unset) -> "0.1,0.5"'),
        ({**FIXED, "sweep:seed": "0,1,2"}, 'sweep:divergence: "kl,rkl" -> (unset)'),
    ],
)
def test_anything_but_more_values_is_another_sweep(new, named):
    growth, problems = sweep_change(grid(), new)
    assert growth is None and named in problems


def test_a_search_does_not_grow():
    stored = {**FIXED, "sweep:divergence": "choice(kl,rkl)"}
    growth, problems = sweep_change(
        stored, {**FIXED, "sweep:divergence": "choice(kl,rkl,js)"}, growable=False
    )
    assert growth is None and problems == ['sweep:divergence: "choice(kl,rkl)" -> "choice(kl,rkl,js)"']


def test_the_fingerprint_records_the_grown_grid_and_its_growths(tmp_path):
    assert record_sweep(tmp_path, grid()) is None
    assert record_sweep(tmp_path, grid()) is None  # a rerun
    assert record_sweep(tmp_path, grid(seed="0,1,2")).added == {"seed": ["2"]}
    assert record_sweep(tmp_path, grid(divergence="kl,rkl,js", seed="0,1,2")).added == {"divergence": ["js"]}
    record = json.loads((tmp_path / "sweep_fingerprint.json").read_text())
    assert record["settings"] == grid(divergence="kl,rkl,js", seed="0,1,2")
    assert [(entry["added"], entry["jobs"]) for entry in record[GROWTH_KEY]] == [
        ({"seed": ["2"]}, 6),
        ({"divergence": ["js"]}, 9),
    ]
    before = snapshot(tmp_path)
    with pytest.raises(
        ConfigError, match=r"another config \(trainer.max_epochs: 1 -> 3\); a sweep folder takes"
    ):
        record_sweep(tmp_path, grid(divergence="kl,rkl,js", seed="0,1,2,3", **{"trainer.max_epochs": 3}))
    assert snapshot(tmp_path) == before


def test_earlier_jobs_keep_their_folders_and_new_ones_follow(tmp_path):
    write_jobs(tmp_path, jobs(["kl", "rkl"], [0, 1]))
    grown = jobs(["kl", "rkl"], [0, 1, 2, 3, 4])
    numbers = job_numbers(tmp_path, grown, ["divergence", "seed"])
    assert numbers == [0, 1, 4, 5, 6, 2, 3, 7, 8, 9]
    assert numbered_batches(grown, numbers) == [(0, [grown[i] for i in (0, 1, 5, 6, 2, 3, 4, 7, 8, 9)])]
    assert job_numbers(tmp_path / "new", grown, ["divergence", "seed"]) == list(range(10))  # Hydra's numbers


def test_a_folder_that_cannot_be_told_keeps_its_number_unused(tmp_path):
    write_jobs(tmp_path, jobs(["kl"], [0, 1]))
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text(": not yaml [")
    (tmp_path / "5").mkdir()
    numbers = job_numbers(tmp_path, jobs(["kl"], [0, 1, 2]), ["divergence", "seed"])
    assert numbers == [0, 2, 3]
    five = jobs(["kl"], range(5))
    assert numbered_batches(five, [0, 2, 3, 6, 7]) == [(0, five[:1]), (2, five[1:3]), (6, five[3:])]
    assert [first for first, _ in numbered_batches(five, [0, 2, 3, 6, 7], max_batch_size=1)] == [
        0,
        2,
        3,
        6,
        7,
    ]


def test_dlab_grows_a_sweep_folder_and_refuses_another_config_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "sweep"
    base = ["-m", "divergence=kl,rkl", f"hydra.sweep.dir={folder}", "trainer.max_epochs=1"]
    assert preflight([*base, "seed=0,1"]).notice is None
    grown = preflight([*base, "seed=0,1,2,3,4"])
    assert grown.notice.startswith(f"growing the sweep in {folder} (seed + 2, 3, 4; 4 -> 10 jobs)")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as refused:
        preflight([*base, "seed=0,1,2,3,4,5", "method.alpha=0.5"])
    assert "holds a sweep of another config (method.alpha: 0.9 -> 0.5)" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    assert snapshot(tmp_path) == before


def run_dlab(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    tiny = ["trainer.max_epochs=1", "method.teacher.max_epochs=1", f"paths.teacher_cache={cwd / 'teachers'}"]
    command = [
        BIN / "dlab",
        "-m",
        *overrides,
        *tiny,
        f"paths.output_root={cwd}",
        f"hydra.sweep.dir={cwd / 'sweep'}",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=cwd)


def trained(sweep: Path, since: dict[str, int]) -> list[str]:
    """The job folders whose metrics.json was written after ``since`` (folder -> mtime) was taken."""
    return sorted(
        (
            p.parent.name
            for p in sweep.glob("*/metrics.json")
            if p.stat().st_mtime_ns != since.get(p.parent.name)
        ),
        key=int,
    )


@pytest.mark.slow
def test_a_two_seed_sweep_grown_to_three_seeds_trains_only_the_new_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_dlab(tmp_path, "divergence=kl,rkl", "seed=0,1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert trained(sweep, {}) == ["0", "1", "2", "3"]
    finished = {p.parent.name: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}

    grown = run_dlab(tmp_path, "divergence=kl,rkl", "seed=0,1,2")
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert "growing the sweep in" in grown.stdout and "(seed + 2; 4 -> 6 jobs)" in grown.stdout
    assert grown.stdout.count("finished earlier, nothing to do") == 4
    assert trained(sweep, finished) == ["4", "5"]  # 1 new seed x 2 groups
    for number in range(6):
        assert json.loads((sweep / str(number) / "status.json").read_text())["attempt"] == 1
    for number, (divergence, seed) in enumerate([("kl", 0), ("kl", 1), ("rkl", 0), ("rkl", 1)]):
        overrides = (sweep / str(number) / ".hydra" / "overrides.yaml").read_text()
        assert (
            f"- divergence={divergence}\n- seed={seed}\n" in overrides
        )  # the earlier jobs kept their folders (Hydra's order would put rkl seed 0 at 3)

    report = collect(sweep, ["test/acc"])
    assert [group.label(report.varying) for group in report.groups] == ["kl", "rkl"]
    assert [sorted(group.seeds) for group in report.groups] == [[0, 1, 2]] * 2
    assert report.expected == 6 and report.missing == [] and report.progress_lines() == []

    before = snapshot(tmp_path)
    refused = run_dlab(tmp_path, "divergence=kl,rkl", "seed=0,1,2,3", "method.alpha=0.5")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "holds a sweep of another config (method.alpha: 0.9 -> 0.5)" in refused.stderr
    assert snapshot(tmp_path) == before
