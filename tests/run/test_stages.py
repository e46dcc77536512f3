"""A method's stages inside a run: run once and saved, loaded on resume with the random state they left,
waited for by the other DDP ranks, run under the trainer's precision."""

import random
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from divergence_lab.methods.stages import Stage, StageContext, run_in_memory
from divergence_lab.run.stages import run_stages, stage_file


def _draws() -> tuple:
    """One number from each global random stream."""
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


class CountingStage:
    """A stage that draws from every random stream (as network initialisation and SGD do) and counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, context: StageContext) -> dict:
        self.calls += 1
        torch.rand(100), np.random.rand(7), random.random()
        return {"weights": torch.arange(4.0), "time_s": 1.5, "kept": [torch.ones(2, dtype=torch.bool)]}


def _run(stages, run_dir: Path, rank_zero: bool = True, precision=None, wait_s: float = 5.0) -> dict:
    return run_stages(
        stages, StageContext(run_dir=run_dir), run_dir, precision or _no_precision, rank_zero, wait_s
    )


@contextmanager
def _no_precision():
    yield


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)


def test_a_stage_runs_once_and_a_rerun_loads_it_with_the_random_state_it_left(tmp_path):
    stage = CountingStage()
    _seed()
    first = _run([Stage("search", stage)], tmp_path)
    after_running = _draws()

    _seed()
    loaded = _run([Stage("search", stage)], tmp_path)
    after_loading = _draws()

    assert stage.calls == 1 and stage_file(tmp_path, "search").is_file()
    assert torch.equal(loaded["search"]["weights"], first["search"]["weights"])
    assert loaded["search"]["time_s"] == 1.5
    assert torch.equal(loaded["search"]["kept"][0], torch.ones(2).bool())
    assert after_loading == after_running  # what follows the stages draws the same numbers


def test_later_stages_read_earlier_outputs(tmp_path):
    first = Stage("rewind", lambda context: {"state": torch.tensor([2.0])})
    second = Stage("search", lambda context: {"doubled": context.outputs["rewind"]["state"] * 2})
    outputs = _run([first, second], tmp_path)
    assert outputs["search"]["doubled"].item() == 4.0
    assert run_in_memory([first, second])["search"]["doubled"].item() == 4.0


def test_another_rank_waits_for_rank_zero_and_never_runs_the_stage(tmp_path):
    producer = CountingStage()
    waiter = CountingStage()
    writer = threading.Timer(0.5, lambda: _run([Stage("simclr", producer)], tmp_path))
    writer.start()
    outputs = _run([Stage("simclr", waiter)], tmp_path, rank_zero=False)
    writer.join()
    assert producer.calls == 1 and waiter.calls == 0
    assert torch.equal(outputs["simclr"]["weights"], torch.arange(4.0))


def test_another_rank_gives_up_with_one_line_when_rank_zero_never_writes(tmp_path):
    with pytest.raises(TimeoutError, match=r"rank 0 did not write .*simclr\.pt within 0 s \(stage_wait_s\)"):
        _run([Stage("simclr", CountingStage())], tmp_path, rank_zero=False, wait_s=0.1)


def test_a_stage_runs_under_the_trainers_precision(tmp_path):
    entered = []

    @contextmanager
    def precision():
        entered.append(True)
        yield

    _run([Stage("teacher", CountingStage())], tmp_path, precision=precision)
    _run([Stage("teacher", CountingStage())], tmp_path, precision=precision)  # loaded: nothing runs
    assert entered == [True]


def test_starting_over_in_place_runs_the_stages_again(tmp_path):
    stage = CountingStage()
    _run([Stage("search", stage)], tmp_path)
    run_stages([Stage("search", stage)], StageContext(), tmp_path, _no_precision, True, 5.0, reuse=False)
    assert stage.calls == 2


def test_a_stage_records_its_numerics_and_one_loaded_under_others_says_so_in_one_line(tmp_path, caplog):
    here = {"threads": 2, "torch": str(torch.__version__), "device": "cpu", "precision": "32-true"}
    stage = CountingStage()
    run_stages([Stage("rewind", stage)], StageContext(), tmp_path, _no_precision, True, 5.0, numerics=here)
    saved = torch.load(stage_file(tmp_path, "rewind"), weights_only=True)
    assert saved["numerics"] == here
    for current, warned in ((here, False), ({**here, "threads": 1}, True)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="divergence_lab"):
            run_stages(
                [Stage("rewind", stage)], StageContext(), tmp_path, _no_precision, True, 5.0, numerics=current
            )
        lines = [r.getMessage() for r in caplog.records if "other numerics" in r.getMessage()]
        assert lines == (
            [
                "[stage] rewind: computed under other numerics (threads 2 -> 1); the run goes on with it, "
                "valid but not bit-identical to an uninterrupted run"
            ]
            if warned
            else []
        )
    assert stage.calls == 1
