"""``method=lm_kd``: the token-level objective, its fused path, on-policy batches, refusals, and real runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict

from divergence_lab import divergences
from divergence_lab.config.checks import validate
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.text.batches import IGNORE_INDEX, right_padded_batch
from divergence_lab.data.text.tokenizer import build_char_tokenizer
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.lm_generation import (
    Sampling,
    batch_prompts,
    generate_new_tokens,
    generation_config,
    on_policy_step,
)
from divergence_lab.methods.lm_kd import (
    LM_TEACHER,
    LM_TEACHER_PROGRESS,
    CausalLMModule,
    LMDistillationModule,
    check_shared_vocabulary,
    stages,
    uses_fused_linear,
)
from divergence_lab.methods.stages import StageContext
from divergence_lab.models.causal_lm import build_causal_lm
from divergence_lab.run.loggers import summary_values
from tests.conftest import compose_config, run_training

DLAB = Path(sys.executable).parent / "dlab"
VOCAB, PAD, BOS, EOS = 11, 0, 1, 2
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
OPTIMIZER = {"name": "adamw", "lr": 1e-2, "weight_decay": 0.0, "scheduler": "none"}
SMALL_DATA = ["data.train_prompts=96", "data.val_prompts=8", "data.test_prompts=8"]
TINY_RUN = [
    "experiment=lm_kd_synthetic",
    *SMALL_DATA,
    "trainer.max_epochs=1",
    "method.teacher.max_epochs=1",
    "method.teacher.model.sizes.n_embd=32",
    "method.evaluation.val_prompts=4",
    "method.evaluation.test_prompts=4",
]
ANSWER_METRICS = ("exact_match", "pass@1", "pass@4", "pass@16", "distinct_correct", "answer_entropy")


def _gpt2(width: int, seed: int, vocab: int = VOCAB) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = OmegaConf.create(
        {
            "_target_": "divergence_lab.models.causal_lm.causal_lm_from_config",
            "model_type": "gpt2",
            "sizes": {"n_layer": 1, "n_embd": width, "n_head": 2, "n_positions": 32, **NO_DROPOUT},
        }
    )
    return build_causal_lm(cfg, vocab, PAD, EOS, BOS).double()


def _module(divergence="kl", alpha=0.5, fraction=0.0, fused=False, **params) -> LMDistillationModule:
    return LMDistillationModule(
        _gpt2(8, seed=0),
        _gpt2(16, seed=1),
        divergences.build(divergence, **params),
        alpha=alpha,
        on_policy_fraction=fraction,
        sampling=Sampling(temperature=1.0, max_new_tokens=4),
        special_tokens=(PAD, EOS),
        seed=0,
        optimizer=OPTIMIZER,
        max_epochs=1,
        evaluation={},
        fused=fused,
        chunk_rows=3,
    )


def _batch() -> dict[str, torch.Tensor]:
    """Three right-padded rows: bos + prompt, then a completion ending in eos (labelled)."""
    examples = [([BOS, 5, 6, 7, 3, EOS], 4), ([BOS, 8, 4, EOS], 3), ([BOS, 9, 5, 6, 7, 8, 3, EOS], 5)]
    return right_padded_batch(examples, PAD)


def test_loss_is_the_mix_of_completion_nll_and_the_masked_mean_of_the_registry_divergence():
    module, batch = _module("rkl", alpha=0.3, temperature=2.0), _batch()
    terms = module.losses(batch)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    student = module.model(**inputs).logits[:, :-1].reshape(-1, VOCAB)
    teacher = module.teacher(**inputs).logits[:, :-1].reshape(-1, VOCAB)
    targets = batch["labels"][:, 1:].reshape(-1)
    labelled = targets != IGNORE_INDEX
    nll = F.cross_entropy(student[labelled], targets[labelled])
    log_q, log_p = F.log_softmax(student[labelled] / 2, -1), F.log_softmax(teacher[labelled] / 2, -1)
    reverse_kl = 4.0 * (log_q.exp() * (log_q - log_p)).sum(-1).mean()  # T² · KL(q ‖ p) per token
    assert student.dtype == torch.float64 and int(labelled.sum()) == 2 + 1 + 3
    torch.testing.assert_close(terms["loss"], 0.7 * nll + 0.3 * reverse_kl)
    torch.testing.assert_close(terms["distill"], reverse_kl)
    torch.testing.assert_close(terms["nll"], nll)


def _gkd_generalized_jsd(student_logits, teacher_logits, labels, beta):
    """A re-derivation of TRL GKDTrainer's loss (trl/experimental/gkd/gkd_trainer.py, generalized_jsd_loss
    as compute_loss calls it: T = 1, logits[:, :-1] against labels[:, 1:], "batchmean" = the sum over
    tokens labelled != -100 divided by their number). beta = 0 is KL(teacher ‖ student), 1 the reverse;
    otherwise beta·KL(p_t ‖ m) + (1 − beta)·KL(p_s ‖ m) with m = beta·p_t + (1 − beta)·p_s."""
    log_s = F.log_softmax(student_logits[:, :-1], dim=-1)
    log_t = F.log_softmax(teacher_logits[:, :-1], dim=-1)
    if beta == 0:
        per_token = F.kl_div(log_s, log_t, reduction="none", log_target=True)
    elif beta == 1:
        per_token = F.kl_div(log_t, log_s, reduction="none", log_target=True)
    else:
        b = torch.tensor(beta, dtype=log_s.dtype)
        log_m = torch.logsumexp(torch.stack([log_s + torch.log1p(-b), log_t + torch.log(b)]), dim=0)
        kl_teacher = F.kl_div(log_m, log_t, reduction="none", log_target=True)
        kl_student = F.kl_div(log_m, log_s, reduction="none", log_target=True)
        per_token = b * kl_teacher + (1 - b) * kl_student
    mask = labels[:, 1:] != IGNORE_INDEX
    return per_token[mask].sum() / mask.sum()


@pytest.mark.parametrize(
    ("divergence", "params", "beta"),
    [
        ("kl", {}, 0.0),
        ("rkl", {}, 1.0),
        ("gjs", {"beta": 0.0}, 0.0),
        ("gjs", {"beta": 0.3}, 0.3),
        ("gjs", {"beta": 0.9}, 0.9),
        ("js", {}, 0.5),
    ],
)
@pytest.mark.parametrize("fused", [False, True])
def test_alpha_one_is_the_gkd_trainer_loss(divergence, params, beta, fused):
    """With alpha = 1 (no NLL term) and T = 1 the distillation loss is TRL GKD's, value and gradient
    (float64), on the logits and on the fused linear path."""
    module = _module(divergence, alpha=1.0, fused=fused, **params)
    batch = _batch()
    loss = module.losses(batch)["loss"]
    grads = torch.autograd.grad(loss, list(module.model.parameters()))
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        teacher_logits = module.teacher(**inputs).logits
    reference = _gkd_generalized_jsd(module.model(**inputs).logits, teacher_logits, batch["labels"], beta)
    expected = torch.autograd.grad(reference, list(module.model.parameters()))
    torch.testing.assert_close(loss, reference, rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_padding_and_prompt_positions_contribute_nothing():
    module, batch = _module("js", alpha=0.5), _batch()
    loss = module.losses(batch)["loss"]
    changed = dict(batch, input_ids=batch["input_ids"].clone())
    padding = batch["attention_mask"] == 0
    changed["input_ids"][padding] = 9  # other tokens at the padded positions: their logits change
    before = module.model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits[padding]
    after = module.model(changed["input_ids"], attention_mask=changed["attention_mask"]).logits[padding]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(module.losses(changed)["loss"], loss, rtol=0, atol=0)


@pytest.mark.parametrize("divergence", ["kl", "gjs"])
def test_fused_linear_path_equals_the_logits_path(divergence):
    plain, fused = (
        _module(divergence, alpha=0.4, temperature=2.0),
        _module(divergence, alpha=0.4, fused=True, temperature=2.0),
    )
    fused.load_state_dict(plain.state_dict())
    batch = _batch()
    losses = [module.losses(batch)["loss"] for module in (plain, fused)]
    torch.testing.assert_close(losses[1], losses[0])
    for loss in losses:
        loss.backward()
    for (name, p), q in zip(plain.model.named_parameters(), fused.model.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_fused_linear_auto_switches_on_at_the_configured_vocabulary():
    model = _gpt2(8, seed=0)
    method = OmegaConf.create({"fused_linear": "auto", "fused_linear_min_vocab": VOCAB})
    assert uses_fused_linear(method, model)
    assert not uses_fused_linear(OmegaConf.merge(method, {"fused_linear_min_vocab": VOCAB + 1}), model)
    assert uses_fused_linear(
        OmegaConf.merge(method, {"fused_linear": True, "fused_linear_min_vocab": 10**6}), model
    )


def test_fully_on_policy_generates_from_the_student_and_trains_it_only(monkeypatch):
    module = _module("kl", alpha=1.0, fraction=1.0)
    calls = []
    generate = module.model.generate

    def spy(*args, **kwargs):
        calls.append(kwargs["input_ids"])
        return generate(*args, **kwargs)

    monkeypatch.setattr(module.model, "generate", spy)
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    optimizer = module.configure_optimizers()
    batch = _batch()
    terms = module.losses(batch)
    terms["loss"].backward()
    optimizer.step()
    assert len(calls) == 1 and terms["on_policy"] == 1.0 and torch.isfinite(terms["loss"])
    prompts = [[token for token in row if token != PAD] for row in calls[0].tolist()]
    assert prompts == batch_prompts(batch) == [[BOS, 5, 6, 7], [BOS, 8, 4], [BOS, 9, 5, 6, 7]]
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in module.model.parameters() if p.requires_grad
    )
    assert all(p.grad is None for p in module.teacher.parameters())
    for name, value in module.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[name]), name


def test_supervised_kd_never_generates(monkeypatch):
    module = _module("rkl", fraction=0.0)
    monkeypatch.setattr(module.model, "generate", lambda *a, **k: pytest.fail("generate called at lambda=0"))
    assert module.losses(_batch())["on_policy"] == 0.0
    assert not any(on_policy_step(seed, step, 0.0) for seed in range(3) for step in range(500))


def test_on_policy_steps_are_a_seeded_fraction_of_the_steps():
    draws = [on_policy_step(7, step, 0.5) for step in range(2000)]
    assert draws == [on_policy_step(7, step, 0.5) for step in range(2000)]  # reproducible
    assert draws != [on_policy_step(8, step, 0.5) for step in range(2000)]
    assert 0.45 < sum(draws) / len(draws) < 0.55
    assert all(on_policy_step(7, step, 1.0) for step in range(200))


def test_the_teacher_stays_out_of_checkpoints_and_keeps_its_weights_on_load():
    module, other = _module(), _module()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    teacher = {k: v.clone() for k, v in other.teacher.state_dict().items()}
    other.load_state_dict(checkpoint["state_dict"])
    assert all(
        torch.equal(a, b) for a, b in zip(other.model.parameters(), module.model.parameters(), strict=True)
    )
    assert all(torch.equal(v, teacher[k]) for k, v in other.teacher.state_dict().items())


def _one_line_error(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as refused:
        validate(compose_config(["experiment=lm_kd_synthetic", *overrides]))
    assert "\n" not in str(refused.value)
    return str(refused.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["divergence=sinkhorn_batch"],
            "divergence=sinkhorn_batch is a batch member; method=lm_kd takes pointwise",
        ),
        (["divergence=dkd"], "divergence=dkd is a labelled member; method=lm_kd takes pointwise members"),
        (
            ["method.on_policy_fraction=1.5"],
            r"method.on_policy_fraction must be a number in [0, 1] (got 1.5)",
        ),
        (
            ["method.evaluation.ks=[1,32]"],
            "method.evaluation.ks must be a non-empty list of integers in [1, samples=16]",
        ),
        (
            ["method.generation.temperature=0"],
            "method.generation.temperature must be a finite number > 0 (got 0)",
        ),
        (
            ["method.fused_linear=sometimes"],
            "method.fused_linear must be one of auto, true, false (got 'sometimes')",
        ),
        (["optimized_metric=val/acc"], "optimized_metric=val/acc is not logged by method=lm_kd"),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_training(overrides, message):
    assert message in _one_line_error(overrides)


@pytest.fixture(scope="module")
def small_data():
    cfg = compose_config(["experiment=lm_kd_synthetic", *SMALL_DATA])
    return cfg, instantiate_datamodule(cfg.data, seed=0)


def _saved_model(folder: Path, vocab: int, tokenizer=None) -> str:
    _gpt2(8, seed=0, vocab=vocab).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return str(folder)


def _with_student_path(cfg, path: str):
    changed = cfg.copy()
    with open_dict(changed):
        changed.model.path = path
    return changed


def test_models_that_do_not_share_the_data_vocabulary_are_refused_in_one_line(small_data, tmp_path):
    cfg, data = small_data
    check_shared_vocabulary(cfg, data)  # both built from configs for the data's vocabulary
    wider = _saved_model(tmp_path / "wider", data.vocab_size + 5)
    same = _saved_model(tmp_path / "same", data.vocab_size, data.tokenizer)
    other = _saved_model(tmp_path / "other", data.vocab_size, build_char_tokenizer("abcdefghijklmnop"))
    cases = {
        wider: "student and teacher must share the vocabulary to be compared token by token; output tokens: "
        f"model {data.vocab_size + 5}, method.teacher.model {data.vocab_size}",
        other: f"model.path: the tokenizer saved in {other} is not the data's",
        str(tmp_path / "missing"): f"model.path: no model at {tmp_path / 'missing'}",
    }
    for path, message in cases.items():
        with pytest.raises(ConfigError) as refused:
            check_shared_vocabulary(_with_student_path(cfg, path), data)
        assert message in str(refused.value) and "\n" not in str(refused.value)
    check_shared_vocabulary(_with_student_path(cfg, same), data)


def test_the_teacher_stage_trains_its_recipe_through_the_context_service(small_data):
    cfg, data = small_data
    fitted = []

    def fit_and_test(module, datamodule, max_epochs, progress):
        fitted.append((module, max_epochs, dict(progress)))
        return {"test/nll": 1.0}

    def teacher_cache(teacher_cfg, recipe):
        datamodule, model = recipe.build(teacher_cfg, cfg.data)
        assert recipe.name == LM_TEACHER and recipe.train(model, teacher_cfg, datamodule) == {"test/nll": 1.0}
        return model

    (stage,) = stages(cfg, data)
    output = stage.run(StageContext(teacher=teacher_cache, fit_and_test=fit_and_test))
    ((module, epochs, progress),) = fitted
    assert isinstance(module, CausalLMModule) and epochs == cfg.method.teacher.max_epochs
    assert progress == LM_TEACHER_PROGRESS
    assert set(output["state"]) == set(module.model.state_dict())


def test_cli_run_writes_answer_metrics_and_an_on_policy_run_shares_its_teacher(tmp_path):
    env = {**os.environ, "DLAB_TEACHER_CACHE": str(tmp_path / "teachers"), "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "rkl"
    command = [DLAB, *TINY_RUN, "divergence=rkl", "threads=1", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((run_dir / "metrics.json").read_text())
    metrics = record["metrics"]
    for name in (*ANSWER_METRICS, "sample_accuracy", "nll", "kl_to_teacher"):
        assert 0.0 <= metrics[f"test/{name}"] < float("inf"), name
    assert 0.0 <= metrics["test/pass@1"] <= metrics["test/pass@4"] <= metrics["test/pass@16"] <= 1.0
    assert "val/pass@1" in metrics and "test/acc" not in metrics and "val/acc" not in metrics  # the preset's
    assert record["method"] == "lm_kd" and record["divergence"] == "rkl"
    teacher = json.loads((run_dir / "teacher.json").read_text())
    (entry,) = teacher.values()
    assert {"test/nll", "test/exact_match"} <= set(entry["test_metrics"])

    threads = torch.get_num_threads()
    try:  # the same thread count as the CLI run: the teacher's key includes it
        on_policy, on_policy_dir = run_training(
            tmp_path,
            [*TINY_RUN, "method.on_policy_fraction=1.0", "method.alpha=1.0", "threads=1"],
            run_name="on_policy",
        )
    finally:
        torch.set_num_threads(threads)
    assert all(f"test/{name}" in on_policy["metrics"] for name in ANSWER_METRICS)
    assert len(list((tmp_path / "teachers").glob("*/teacher.pt"))) == 1  # the CLI run's teacher, reused
    curves = (on_policy_dir / "csv" / "metrics.csv").read_text().splitlines()
    assert "train/on_policy_epoch" in curves[0]


def test_the_run_summary_of_a_method_without_accuracy_names_its_selected_metric():
    metrics = {"test/exact_match": 0.5, "val/exact_match": 0.4, "train/loss": 1.0}
    assert summary_values(metrics, "val/exact_match", tested_best=True) == {
        "test/exact_match": 0.5,
        "selected/val_exact_match": 0.4,
        "best/val_exact_match": 0.4,
    }


def test_a_saved_generation_config_does_not_change_what_is_generated():
    model, prompts = (
        _gpt2(8, seed=0),
        {"input_ids": torch.tensor([[BOS, 5, 6]]), "attention_mask": torch.ones(1, 3)},
    )
    greedy = generation_config(6, PAD, EOS)
    sampled = generation_config(6, PAD, EOS, Sampling(temperature=1.0, max_new_tokens=6))
    plain = [generate_new_tokens(model, prompts, greedy)]
    torch.manual_seed(0)
    plain.append(generate_new_tokens(model, prompts, sampled))
    model.generation_config.update(repetition_penalty=50.0, no_repeat_ngram_size=1, top_k=1, temperature=0.01)
    torch.manual_seed(0)
    assert torch.equal(generate_new_tokens(model, prompts, greedy), plain[0])
    torch.manual_seed(0)
    assert torch.equal(generate_new_tokens(model, prompts, sampled), plain[1])
