"""Progress lines of the stages that run outside Lightning (CTS search, rewind training, LTR rounds, SimCLR
pre-training), and the line format of :mod:`divergence_lab.ground.progress`."""

import itertools
import logging
import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from divergence_lab import divergences
from divergence_lab.ground import progress
from divergence_lab.ground.progress import StageProgress, format_duration, mean_of
from divergence_lab.methods import pruning
from divergence_lab.methods.legogcd import GCDNetwork, build_backbone, pretrain_backbone
from divergence_lab.methods.stages import build_in_memory
from divergence_lab.models.mlp import MLP
from divergence_lab.pruning.concrete import concrete_search
from divergence_lab.run.pipeline import build_datamodule
from tests.conftest import compose_config

NUMBER = r"[-+0-9.e]+|nan"


@pytest.fixture
def progress_lines(caplog):
    """The messages logged through the ``divergence_lab`` logger, as a function of a stage name."""
    caplog.set_level(logging.INFO, logger="divergence_lab")

    def lines(stage: str) -> list[str]:
        prefix = f"[{stage}] "
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]

    return lines


@pytest.fixture
def clock(monkeypatch):
    """A fake monotonic clock for :mod:`divergence_lab.ground.progress`: set ``clock.now`` to move time."""

    class Clock:
        now = 100.0

    monkeypatch.setattr(progress.time, "monotonic", lambda: Clock.now)
    return Clock


def test_a_line_names_the_stage_step_values_and_time_left(clock, progress_lines):
    stage = StageProgress("teacher", 5)
    clock.now += 10.0
    line = stage.step(2, {"loss": 0.412345, "acc": 0.9})
    assert line == "[teacher] epoch 2/5  loss 0.4123  acc 0.9  elapsed 10.0s  left ~15.0s"
    assert progress_lines("teacher") == [line]  # logged as well as returned
    clock.now += 40.0
    assert stage.step(5) == "[teacher] epoch 5/5  elapsed 50.0s"  # nothing left to estimate at the end


def test_time_left_counts_only_the_steps_of_this_process(clock):
    """A resumed run starts at step 3: the steps before it took no time here."""
    stage = StageProgress("student", 10, unit="round", start=3)
    assert stage.step(3) == "[student] round 3/10  elapsed 0.0s"  # no step timed yet: no estimate
    clock.now += 20.0
    assert stage.step(5) == "[student] round 5/10  elapsed 20.0s  left ~50.0s"  # 10 s per step, 5 to go


def test_an_unknown_total_gives_the_step_count_only(clock):
    clock.now += 3.0
    assert StageProgress("search", None).step(4, {"loss": 1.0}) == "[search] epoch 4  loss 1  elapsed 0.0s"


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.14, "4.1s"), (59.94, "59.9s"), (187, "3m07s"), (3720, "1h02m")]
)
def test_durations_are_short(seconds, text):
    assert format_duration(seconds) == text


def test_mean_of_tensors_and_floats():
    assert mean_of([torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.5)]) == pytest.approx(2.5)
    assert mean_of([0.5, 1.5]) == 1.0
    assert math.isnan(mean_of([]))


def assert_numbered(lines: list[str], unit: str, total: int, values: list[str]) -> None:
    """``lines`` are ``<unit> 1/total`` ... ``<unit> total/total``, each with ``values`` as numbers."""
    assert len(lines) == total, lines
    for done, line in enumerate(lines, start=1):
        assert f" {unit} {done}/{total}  " in line, line
        for name in values:
            assert re.search(rf"  {name} ({NUMBER})  ", line), (name, line)


def test_cts_search_logs_one_line_per_search_epoch(progress_lines):
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 8, generator=generator), torch.arange(60) % 4
    torch.manual_seed(0)
    net = MLP((8,), 4, hidden=[16])
    rkl = divergences.build("rkl")
    batches_per_epoch = 3

    def batches(epoch):
        return list(zip(x.chunk(batches_per_epoch), y.chunk(batches_per_epoch), strict=True))

    result = concrete_search(net, batches, 0.2, lambda s, d, labels: rkl(s, d).mean(), epochs=4)
    lines = progress_lines("cts search")
    assert_numbered(lines, "epoch", 4, ["objective", "expected density"])
    last_steps = result.expected_density[batches_per_epoch - 1 :: batches_per_epoch]
    for line, expected in zip(lines, last_steps, strict=True):
        assert f"expected density {expected:.4g}  " in line  # after the epoch's last step


def test_rewind_training_and_ltr_log_one_line_per_epoch_and_per_round(progress_lines):
    cfg = compose_config(
        [
            "experiment=cts_digits",
            "method=prune",
            "method.pruner=ltr",
            "method.density=0.3",
            "method.ltr.prune_fraction=0.5",
            "method.ltr.epochs_per_round=1",
            "method.rewind_epochs=2",
        ]
    )
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    build_in_memory(cfg, datamodule)
    assert_numbered(progress_lines("rewind"), "epoch", 2, ["loss"])
    rounds = progress_lines("ltr")
    assert_numbered(rounds, "round", 2, ["density"])  # 1 -> 0.5 -> 0.3
    assert "density 0.5  " in rounds[0] and "density 0.3  " in rounds[1]
    for done in (1, 2):
        assert_numbered(progress_lines(f"ltr round {done}/2"), "epoch", 1, ["loss"])


def test_ltr_densities_stop_exactly_at_the_target():
    assert pruning.ltr_densities(1000, 0.3, 0.5) == [0.5, 0.3]
    assert pruning.ltr_densities(1000, 1.0, 0.2) == []
    densities = pruning.ltr_densities(50_200, 0.01, 0.2)
    assert densities[-1] == 0.01 and all(a > b for a, b in itertools.pairwise(densities))


def test_simclr_pretraining_logs_one_line_per_epoch_with_the_mean_infonce(progress_lines):
    torch.manual_seed(0)
    backbone, width = build_backbone("mlp", (16,), [8], 20)
    net = GCDNetwork(backbone, width, 4, 6)
    settings = OmegaConf.create({"epochs": 3, "batch_size": 16, "lr": 1e-3, "temperature": 0.5})
    pretrain_backbone(net, torch.rand(40, 16), "vector", settings, torch.device("cpu"))
    lines = progress_lines("simclr pretraining")
    assert_numbered(lines, "epoch", 3, ["infonce"])
    assert all(float(re.search(rf"infonce ({NUMBER})", line)[1]) > 0 for line in lines)
