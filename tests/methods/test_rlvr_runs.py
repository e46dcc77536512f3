"""``method=rlvr`` end to end: a run writes the RL metrics, repeats itself, survives an interruption, and
without a regulariser collapses the diversity of the answers (the effect the RL-divergence papers study)."""

from __future__ import annotations

import json
import logging
import signal

import pytest

from tests.conftest import run_training
from tests.faults.test_fault_injection import results

SMALL_RUN = [
    "experiment=rlvr_synthetic",
    "data.train_prompts=48",
    "data.val_prompts=8",
    "data.test_prompts=8",
    "data.batch_size=4",
    "method.group_size=4",
    "method.initial.max_epochs=2",
    "method.evaluation.val_prompts=4",
    "method.evaluation.test_prompts=8",
    "method.evaluation.samples=8",
    "method.evaluation.ks=[1,4,8]",
    "trainer.max_epochs=2",
    "threads=1",
]
RL_METRICS = (
    "reward",
    "answer_prob",
    "pass@1_exact",
    "pass@64_exact",
    "answer_coverage",
    "correct_entropy",
    "kl_reverse",
    "kl_forward",
    "kl_reverse_seq",
    "kl_forward_seq",
    "entropy",
    "exact_match",
    "pass@8",
    "distinct_correct",
)
COLLAPSE = 0.3  # the drop of Pass@16 from the initial policy that plain RL must show on the multi-answer task


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlvr")
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("divergence_lab.methods.rlvr")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        metrics, run_dir = run_training(root, [*SMALL_RUN, "divergence=kl"], "reference")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return root, metrics, run_dir, logged


@pytest.mark.slow
def test_a_run_writes_the_rl_metrics_and_names_its_regulariser(uninterrupted):
    _, record, run_dir, logged = uninterrupted
    metrics = record["metrics"]
    for name in RL_METRICS:
        assert 0.0 <= metrics[f"test/{name}"] < float("inf"), name
    assert metrics["test/pass@1_exact"] <= metrics["test/pass@16_exact"] <= metrics["test/pass@64_exact"] <= 1
    assert metrics["test/pass@1_exact"] == pytest.approx(metrics["test/answer_prob"])
    assert record["method"] == "rlvr" and record["divergence"] == "kl"
    assert any(
        "KL(reference ‖ policy), forward, mass-covering, exact over the vocabulary" in m for m in logged
    )
    curves = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert all(
        f"train/{name}" in curves for name in ("reward", "kl_reverse", "policy_gradient", "divergence")
    )


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics(uninterrupted, tmp_path):
    root, record, _, _ = uninterrupted
    again, _ = run_training(root, [*SMALL_RUN, "divergence=kl"], "again")
    assert results(again["metrics"]) == results(record["metrics"])


@pytest.mark.slow
def test_an_interrupted_run_resumes_to_the_same_numbers(uninterrupted, monkeypatch, capsys):
    from tests.faults.hooks import install

    root, record, _, _ = uninterrupted
    with monkeypatch.context() as patched:
        install("fit", signal.SIGINT, patched.setattr)
        with pytest.raises(SystemExit):
            run_training(root, [*SMALL_RUN, "divergence=kl"], "interrupted")
    run_dir = root / "interrupted"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "interrupted"
    rerun, _ = run_training(root, [*SMALL_RUN, "divergence=kl"], "interrupted")
    assert results(rerun["metrics"]) == results(record["metrics"])


@pytest.mark.slow
def test_without_a_regulariser_rl_collapses_pass_at_16(tmp_path):
    """The preset itself (initial policy: 15 epochs of SFT; 150 RL steps) at beta = 0: Pass@16 of the sampled
    answers falls by at least COLLAPSE from the initial policy's, and so does the number of distinct correct
    answers."""
    record, run_dir = run_training(
        tmp_path, ["experiment=rlvr_synthetic", "+rl_regulariser=none", "threads=1"]
    )
    (initial,) = json.loads((run_dir / "teacher.json").read_text()).values()
    before, after = initial["test_metrics"], record["metrics"]
    assert before["test/pass@16"] - after["test/pass@16"] >= COLLAPSE
    assert after["test/distinct_correct"] < before["test/distinct_correct"] / 2
