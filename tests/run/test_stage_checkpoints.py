"""Per-epoch checkpoints of a stage (``context.checkpoint``) and the run fingerprint in stage files.

A stage interrupted after epoch k and run again continues with epoch k + 1 and ends bit-identical to an
uninterrupted one; its partial folder goes once the stage's output is saved; without a run folder nothing
is kept. A stage file (final or partial) of another config is refused in one line; one without a digest
(written before stage files recorded it) loads.
"""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.progress import StageProgress
from divergence_lab.methods.stages import Stage, StageContext, cpu_state, run_in_memory
from divergence_lab.run.stages import partial_folder, run_stages, stage_file

EPOCHS = 4
STOP_AFTER = 2
LOOP = "toy training"


class Stop(BaseException):
    """Stands for a signal that ends the process inside the loop."""


class ToyStage:
    """A stage whose loop draws from every random stream (dropout, a shuffle, NumPy, Python) each epoch,
    keeps its progress in ``context.checkpoint(LOOP)`` and can be stopped after an epoch."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after
        self.epochs_run: list[int] = []

    def __call__(self, context: StageContext) -> dict:
        net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.3), nn.Linear(8, 3))
        optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
        x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
        checkpoint = context.checkpoint(LOOP)
        first = 0
        if (resumed := checkpoint.load()) is not None:
            first, state = resumed
            net.load_state_dict(state["net"])
            optimizer.load_state_dict(state["optimizer"])
        progress = StageProgress(LOOP, EPOCHS, start=first)
        if first:
            progress.resuming(first)
        for epoch in range(first, EPOCHS):
            self.epochs_run.append(epoch + 1)
            order = torch.randperm(len(x))
            noise = float(np.random.rand()) + random.random()
            loss = nn.functional.cross_entropy(net(x[order]), y[order]) * (1 + noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            checkpoint.save(epoch + 1, {"net": cpu_state(net), "optimizer": optimizer.state_dict()})
            progress.step(epoch + 1)
            if epoch + 1 == self.stop_after:
                raise Stop
        return {"state": cpu_state(net), "after": torch.rand(3)}


@contextmanager
def _no_precision():
    yield


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)


def _run(stage: ToyStage, run_dir: Path, reuse: bool = True) -> dict:
    _seed()
    return run_stages([Stage("toy", stage)], StageContext(), run_dir, _no_precision, True, 5.0, reuse)


def _fingerprint(run_dir: Path, digest: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "fingerprint.json").write_text(json.dumps({"sha256": digest, "settings": {}}))


def _equal_outputs(a: dict, b: dict) -> bool:
    return torch.equal(a["after"], b["after"]) and all(
        torch.equal(a["state"][name], b["state"][name]) for name in a["state"]
    )


def test_an_interrupted_stage_continues_after_its_last_epoch_with_identical_output(tmp_path, caplog):
    reference = _run(ToyStage(), tmp_path / "reference")["toy"]

    run_dir = tmp_path / "run"
    with pytest.raises(Stop):
        _run(ToyStage(stop_after=STOP_AFTER), run_dir)
    partial = partial_folder(run_dir, "toy")
    assert (partial / "toy_training.pt").is_file() and not stage_file(run_dir, "toy").exists()

    caplog.set_level("INFO", logger="divergence_lab")
    resumed_stage = ToyStage()
    resumed = _run(resumed_stage, run_dir)["toy"]
    assert resumed_stage.epochs_run == [3, 4]  # epochs 1 and 2 were not trained again
    assert _equal_outputs(resumed, reference)  # the weights and what the random streams drew after
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("[toy")]
    assert lines[0] == f"[{LOOP}] resuming {LOOP} at epoch 3/4 (2 done before)"
    assert [line.split("  ")[0] for line in lines[1:]] == [f"[{LOOP}] epoch 3/4", f"[{LOOP}] epoch 4/4"]
    assert stage_file(run_dir, "toy").is_file() and not partial.exists()  # removed once the stage is saved


def test_starting_over_in_place_ignores_the_partial_stage(tmp_path):
    with pytest.raises(Stop):
        _run(ToyStage(stop_after=STOP_AFTER), tmp_path)
    again = ToyStage()
    _run(again, tmp_path, reuse=False)
    assert again.epochs_run == [1, 2, 3, 4]


def test_without_a_run_folder_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stage = ToyStage()
    _seed()
    in_memory = run_in_memory([Stage("toy", stage)])["toy"]
    assert stage.epochs_run == [1, 2, 3, 4] and not any(tmp_path.iterdir())
    assert _equal_outputs(in_memory, _run(ToyStage(), tmp_path / "run")["toy"])


def test_stage_files_record_the_runs_fingerprint_digest(tmp_path):
    _fingerprint(tmp_path, "a" * 64)
    with pytest.raises(Stop):
        _run(ToyStage(stop_after=1), tmp_path)
    partial = torch.load(partial_folder(tmp_path, "toy") / "toy_training.pt", weights_only=True)
    assert partial["fingerprint"] == "a" * 64 and partial["epoch"] == 1 and partial["loop"] == LOOP
    _run(ToyStage(), tmp_path)
    assert torch.load(stage_file(tmp_path, "toy"), weights_only=True)["fingerprint"] == "a" * 64


def _refusal(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "ckpt_path=fresh" in message
    assert "another config" in message


def test_a_stage_file_of_another_fingerprint_is_refused_in_one_line(tmp_path):
    _fingerprint(tmp_path, "a" * 64)
    _run(ToyStage(), tmp_path)
    _fingerprint(tmp_path, "b" * 64)
    stage = ToyStage()
    with pytest.raises(ConfigError) as refused:
        _run(stage, tmp_path)
    _refusal(refused, stage_file(tmp_path, "toy"))
    assert stage.epochs_run == []


def test_a_partial_stage_of_another_fingerprint_is_refused_in_one_line(tmp_path):
    _fingerprint(tmp_path, "a" * 64)
    with pytest.raises(Stop):
        _run(ToyStage(stop_after=STOP_AFTER), tmp_path)
    _fingerprint(tmp_path, "b" * 64)
    with pytest.raises(ConfigError) as refused:
        _run(ToyStage(), tmp_path)
    _refusal(refused, partial_folder(tmp_path, "toy") / "toy_training.pt")


def test_stage_files_without_a_digest_are_accepted(tmp_path):
    reference = _run(ToyStage(), tmp_path / "reference")["toy"]
    _fingerprint(tmp_path, "a" * 64)
    with pytest.raises(Stop):
        _run(ToyStage(stop_after=STOP_AFTER), tmp_path)
    path = partial_folder(tmp_path, "toy") / "toy_training.pt"
    older = torch.load(path, weights_only=True)
    del older["fingerprint"]  # as written before stage files recorded their run
    torch.save(older, path)
    resumed = ToyStage()
    assert _equal_outputs(_run(resumed, tmp_path)["toy"], reference) and resumed.epochs_run == [3, 4]

    final = torch.load(stage_file(tmp_path, "toy"), weights_only=True)
    del final["fingerprint"]
    torch.save(final, stage_file(tmp_path, "toy"))
    _fingerprint(tmp_path, "b" * 64)
    loaded = ToyStage()
    assert _equal_outputs(_run(loaded, tmp_path)["toy"], reference) and loaded.epochs_run == []
