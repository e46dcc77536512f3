"""The offline W&B reader against files written by wandb itself, including records that span blocks."""

import os
import subprocess
import sys
import textwrap

import pytest

from divergence_lab.report.wandb_files import BLOCK_SIZE, read_offline_run, record_payloads

WRITER = textwrap.dedent(
    """
    import sys, wandb
    run = wandb.init(project="p", id="r1", group="study/sweep", job_type="kd", tags=["kl", "seed=0"],
                     dir=sys.argv[1], config={"blob": "x" * 100_000, "nested": {"t": 2.0}})
    for step in range(50):
        run.log({"val/acc": step / 100, "epoch": step})
    run.config.update({"late": [1, 2]})
    run.summary.update({"best/val_acc": 0.49})
    run.finish()
    """
)


@pytest.fixture(scope="module")
def offline_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wandb")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    subprocess.run([sys.executable, "-c", WRITER, str(folder)], check=True, env=env, timeout=120)
    (path,) = folder.glob("wandb/offline-run-*-r1/run-r1.wandb")
    return path


def test_reads_identity_config_history_and_summary(offline_file):
    run = read_offline_run(offline_file)
    assert (run.run_id, run.project, run.group, run.job_type) == ("r1", "p", "study/sweep", "kd")
    assert run.tags == ["kl", "seed=0"]
    assert run.config["blob"] == "x" * 100_000  # a record longer than one 32 KiB block
    assert run.config["nested"] == {"t": 2.0} and run.config["late"] == [1, 2]
    assert [row["epoch"] for row in run.history] == list(range(50))
    assert run.history[10]["val/acc"] == pytest.approx(0.10)
    assert run.summary["best/val_acc"] == pytest.approx(0.49)
    assert run.summary["val/acc"] == pytest.approx(0.49)  # the last logged value
    assert run.exit_code == 0


def test_file_spans_several_blocks(offline_file):
    assert offline_file.stat().st_size > 3 * BLOCK_SIZE
    assert sum(1 for _ in record_payloads(offline_file)) > 50


def test_refuses_a_file_that_is_not_a_run_file(tmp_path):
    path = tmp_path / "run-x.wandb"
    path.write_bytes(b"not a wandb file at all")
    with pytest.raises(ValueError, match="is not a W&B run file"):
        read_offline_run(path)


def test_detects_a_corrupt_chunk(offline_file, tmp_path):
    data = bytearray(offline_file.read_bytes())
    data[200] ^= 0xFF
    path = tmp_path / "run-corrupt.wandb"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt chunk"):
        read_offline_run(path)
