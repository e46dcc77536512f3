"""f-DPO (``divergence_lab.methods.f_dpo``) and ``method=dpo``: the implicit rewards against the paper's f,
plain DPO, TRL's DPOTrainer before and after its Feb-2026 refactor, refusals, the pairs, and one step."""

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict

from divergence_lab import divergences
from divergence_lab.config.checks import validate
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.text.batches import IGNORE_INDEX
from divergence_lab.data.text.tokenizer import decode_completion
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods import dpo
from divergence_lab.methods.dpo import DPOModule, first_wrong, pair_batch, sample_pairs, stages
from divergence_lab.methods.f_dpo import (
    F_DPO_DIVERGENCES,
    f_dpo_loss,
    implicit_reward,
    paper_alpha,
)
from divergence_lab.methods.lm_generation import Sampling
from divergence_lab.methods.stages import build_in_memory
from divergence_lab.metrics.generation import extract_answer
from tests.conftest import compose_config, run_training

TRL_AFTER = "e3b7897c873f94c26bf1a661df19e428239be114"  # huggingface/trl "Refactor DPO (#3906)", 2026-02-19
TRL_BEFORE = "8c232f64b5bb00ef854bff157f6857241d415fe0"  # the commit before it on trl/trainer/dpo_trainer.py
TRL_NAMES = {"reverse_kl": "rkl", "forward_kl": "kl", "js_divergence": "js", "alpha_divergence": "alpha"}
PAPER_ALPHAS = (0.1, 0.3, 0.5, 0.9)
BETA = 0.3
TINY = [
    "experiment=dpo_synthetic",
    "data.train_prompts=24",
    "data.val_prompts=4",
    "data.test_prompts=4",
    "method.initial.max_epochs=0",  # π₀ as built: untrained, so nearly every sample is wrong
    "method.pairs.samples=4",
    "model.sizes.n_layer=1",
    "model.sizes.n_embd=16",
    "model.sizes.n_head=2",
]


# --- (a) f′ against the paper's f, differentiated by autograd in float64 ---------------------------------


def _paper_f(name, alpha=None):
    """The generators of arXiv 2309.16240 (Table 1), written from their definitions."""
    if name == "rkl":
        return lambda t: t * torch.log(t)
    if name == "kl":
        return lambda t: -torch.log(t)
    if name == "js":
        return lambda t: t * torch.log(t) - (1 + t) * torch.log((1 + t) / 2)
    return lambda t: (t ** (1 - alpha) - (1 - alpha) * t - alpha) / (alpha * (alpha - 1))


def _derivative(f, t):
    t = t.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(t).sum(), t)
    return grad


CASES = [("rkl", None), ("kl", None), ("js", None), *[("alpha", a) for a in PAPER_ALPHAS]]


@pytest.mark.parametrize(("name", "alpha"), CASES)
def test_the_reward_is_the_derivative_of_the_papers_f_normalised_to_zero_at_the_reference(name, alpha):
    u = torch.linspace(-6.0, 6.0, 49, dtype=torch.float64)
    f = _paper_f(name, alpha)
    expected = _derivative(f, u.exp()) - _derivative(f, torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(implicit_reward(u, name, alpha), expected, rtol=1e-12, atol=1e-12)
    step = 1e-6  # and a central difference of f, independent of autograd
    t = u.exp()
    central = (f(t + step * t) - f(t - step * t)) / (2 * step * t)
    torch.testing.assert_close(
        implicit_reward(u, name, alpha) + _derivative(f, torch.ones(1).double()), central
    )


def test_the_alpha_family_runs_from_reverse_kl_to_forward_kl():
    u = torch.linspace(-5.0, 5.0, 21, dtype=torch.float64)
    torch.testing.assert_close(implicit_reward(u, "alpha", 0.0), implicit_reward(u, "rkl"), rtol=0, atol=0)
    torch.testing.assert_close(implicit_reward(u, "alpha", 1e-9), implicit_reward(u, "rkl"))
    torch.testing.assert_close(implicit_reward(u, "alpha", 1.0), implicit_reward(u, "kl"), rtol=1e-14, atol=0)


def _paper_divergence(name, alpha, policy, reference):
    """D_f(π ‖ π_ref) = Σ π_ref f(π / π_ref) of the paper's f."""
    return (reference * _paper_f(name, alpha)(policy / reference)).sum(-1)


@pytest.mark.parametrize(
    ("name", "alpha", "registry", "params", "scale"),
    [
        ("rkl", None, "rkl", {}, 1.0),
        ("kl", None, "kl", {}, 1.0),
        ("js", None, "js", {}, 2.0),  # the paper's JS generator is twice the registry's
        *[("alpha", a, "alpha", {"alpha": 1.0 - 2.0 * a}, 1.0) for a in PAPER_ALPHAS],
    ],
)
def test_each_papers_f_is_the_registry_member_of_that_name_with_the_policy_as_the_student(
    name, alpha, registry, params, scale
):
    generator = torch.Generator().manual_seed(0)
    policy_logits = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    reference_logits = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    member = divergences.build(registry, **params)
    expected = _paper_divergence(name, alpha, policy_logits.softmax(-1), reference_logits.softmax(-1))
    torch.testing.assert_close(scale * member(policy_logits, reference_logits), expected)
    if name == "alpha":  # and the registry convention reads the member's own α
        assert paper_alpha(params["alpha"], "registry") == pytest.approx(alpha)


# --- (b) rkl is DPO --------------------------------------------------------------------------------------


def _log_probs(seed, count=6):
    generator = torch.Generator().manual_seed(seed)
    return [
        (-5.0 * torch.rand(count, generator=generator, dtype=torch.float64)).requires_grad_(index < 2)
        for index in range(4)
    ]


def test_rkl_is_the_sigmoid_dpo_loss():
    chosen, rejected, ref_chosen, ref_rejected = _log_probs(1)
    loss, reward_chosen, reward_rejected = f_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, BETA, "rkl")
    dpo_loss = -F.logsigmoid(BETA * ((chosen - rejected) - (ref_chosen - ref_rejected)))
    torch.testing.assert_close(loss, dpo_loss, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(reward_chosen, BETA * (chosen - ref_chosen).detach())
    torch.testing.assert_close(reward_rejected, BETA * (rejected - ref_rejected).detach())
    assert not reward_chosen.requires_grad and loss.requires_grad


# --- (c) TRL DPOTrainer's f-divergence scores, re-derived ------------------------------------------------


def _trl_after_scores(logratios, f_type, coef):
    """trl/trainer/dpo_trainer.py at TRL_AFTER (DPOTrainer._compute_loss): reverse_kl u; forward_kl
    −exp(−u); js_divergence logsigmoid(u); alpha_divergence exp((α − 1)u)/(α − 1), u itself at α = 1.
    (Its exponent clamp at 80 is keyed by float16/bfloat16/float32 only; these values stay far below it.)"""
    if f_type == "reverse_kl":
        return logratios
    if f_type == "forward_kl":
        return -torch.exp(-logratios)
    if f_type == "js_divergence":
        return F.logsigmoid(logratios)
    if abs(coef - 1.0) < 1e-6:
        return logratios
    return torch.exp((coef - 1.0) * logratios) / (coef - 1.0)


def _trl_after_loss(chosen, rejected, ref_chosen, ref_rejected, beta, f_type, coef):
    delta = _trl_after_scores(chosen - ref_chosen, f_type, coef) - _trl_after_scores(
        rejected - ref_rejected, f_type, coef
    )
    return -F.logsigmoid(beta * delta)  # loss_type "sigmoid"


def _trl_before_loss(chosen, rejected, ref_chosen, ref_rejected, beta, f_type, coef):
    """trl/trainer/dpo_trainer.py at TRL_BEFORE (DPOTrainer.dpo_loss, loss_type "sigmoid", no label
    smoothing): alpha_divergence (e^{−α u_l} − e^{−α u_w})/α; otherwise the DPO logits (u_w − u_l), minus
    softplus(u_w) − softplus(u_l) for js_divergence. It had no forward_kl."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    if f_type == "alpha_divergence":
        logits = (torch.exp(-coef * rejected_ratio) - torch.exp(-coef * chosen_ratio)) / coef
    else:
        logits = (chosen - rejected) - (ref_chosen - ref_rejected)
        if f_type == "js_divergence":
            logits = logits - (F.softplus(chosen_ratio) - F.softplus(rejected_ratio))
    return -F.logsigmoid(beta * logits)


def _values_and_gradients(loss_fn, inputs):
    loss = loss_fn(*inputs)
    gradients = torch.autograd.grad(loss.sum(), inputs[:2])
    return loss.detach(), gradients


def _assert_same(ours, theirs):
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-14)
    for mine, peer in zip(ours[1], theirs[1], strict=True):
        torch.testing.assert_close(mine, peer, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("f_type", "coef"),
    [("reverse_kl", None), ("forward_kl", None), ("js_divergence", None)]
    + [("alpha_divergence", coef) for coef in (0.0, 0.2, 0.5, 0.7, 1.0)],
)
def test_values_and_gradients_equal_trl_after_its_refactor(f_type, coef):
    inputs = _log_probs(2)
    name = TRL_NAMES[f_type]
    theirs = _values_and_gradients(lambda *x: _trl_after_loss(*x, BETA, f_type, coef), inputs)
    as_trl = _values_and_gradients(lambda *x: f_dpo_loss(*x, BETA, name, coef, "trl")[0], inputs)
    _assert_same(as_trl, theirs)
    if coef is not None:  # the paper's α is 1 − TRL's
        as_paper = _values_and_gradients(
            lambda *x: f_dpo_loss(*x, BETA, name, 1.0 - coef, "paper")[0], inputs
        )
        _assert_same(as_paper, theirs)


@pytest.mark.parametrize(
    ("f_type", "coef"),
    [("reverse_kl", None), ("js_divergence", None)]
    + [("alpha_divergence", coef) for coef in (0.3, 0.5, 1.0)],  # 1.0 was the default then
)
def test_values_and_gradients_equal_trl_before_its_refactor_with_the_papers_alpha(f_type, coef):
    inputs = _log_probs(3)
    theirs = _values_and_gradients(lambda *x: _trl_before_loss(*x, BETA, f_type, coef), inputs)
    ours = _values_and_gradients(lambda *x: f_dpo_loss(*x, BETA, TRL_NAMES[f_type], coef, "paper")[0], inputs)
    _assert_same(ours, theirs)


def test_trl_before_and_after_read_the_same_alpha_differently_except_at_one_half():
    inputs = [t.detach() for t in _log_probs(4)]
    for coef, same in ((0.3, False), (0.5, True), (0.9, False)):
        before = _trl_before_loss(*inputs, BETA, "alpha_divergence", coef)
        after = _trl_after_loss(*inputs, BETA, "alpha_divergence", coef)
        assert torch.allclose(before, after, rtol=1e-12) == same, coef


def test_rewards_saturate_instead_of_overflowing_far_from_the_reference():
    u = torch.tensor([-200.0, 0.0, 200.0])
    for name, alpha in CASES:
        assert torch.isfinite(implicit_reward(u, name, alpha)).all(), name


# --- (d) refusals ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    cfg = compose_config(TINY)
    datamodule = instantiate_datamodule(cfg.data, seed=0)
    datamodule.setup()
    return cfg, datamodule


def _with(cfg, **changes):
    changed = cfg.copy()
    with open_dict(changed):
        for key, value in changes.items():
            OmegaConf.update(changed, key, value)
    return changed


def _refusal(call) -> str:
    with pytest.raises(ConfigError) as refused:
        call()
    assert "\n" not in str(refused.value)
    return str(refused.value)


@pytest.mark.parametrize("member", ["tv", "hellinger", "chi2"])
def test_a_divergence_without_the_f_dpo_property_is_refused_at_the_pre_flight_and_by_the_stages(member):
    cfg = compose_config([*TINY, f"divergence={member}"])
    assert _refusal(lambda: validate(cfg)) == (
        f"divergence={member}: method=dpo takes rkl, kl, js, alpha (the divergences with an f-DPO implicit "
        "reward f'(pi/ref))"
    )
    message = _refusal(lambda: stages(cfg, None))
    assert f"divergence={member} has no f-DPO implicit reward" in message
    assert message.endswith("method=dpo takes rkl, kl, js, alpha")
    assert set(F_DPO_DIVERGENCES) == {"rkl", "kl", "js", "alpha"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["divergence=alpha", "divergence.alpha=1.5", "method.alpha_convention=trl"],
            "divergence.alpha=1.5 read as method.alpha_convention=trl must be in [0, 1]",
        ),
        (
            ["divergence=alpha", "divergence.alpha=-1.5"],
            "divergence.alpha=-1.5 read as method.alpha_convention=registry must be in [-1, 1]",
        ),
        (["divergence.temperature=2.0"], "divergence.temperature=2.0: method=dpo compares sequence"),
    ],
)
def test_an_alpha_outside_the_family_or_a_temperature_is_refused_by_the_stages(overrides, message):
    assert message in _refusal(lambda: stages(compose_config([*TINY, *overrides]), None))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.alpha_convention=amari"], "method.alpha_convention must be one of registry, paper, trl"),
        (["method.reference=teacher"], "method.reference must be one of init"),
        (["method.beta=0"], "method.beta must be a finite number > 0"),
        (["method.evaluation.ks=[1,32]"], "method.evaluation.ks must be a non-empty list of integers"),
    ],
)
def test_bad_settings_are_refused_in_one_line_at_the_pre_flight(overrides, message):
    assert message in _refusal(lambda: validate(compose_config([*TINY, *overrides])))


@pytest.mark.parametrize(
    ("alpha", "convention", "paper"),
    [
        (0.0, "registry", 0.5),
        (1.0, "registry", 0.0),
        (-1.0, "registry", 1.0),
        (0.3, "trl", 0.7),
        (0.3, "paper", 0.3),
    ],
)
def test_the_alpha_conventions(alpha, convention, paper):
    assert paper_alpha(alpha, convention) == pytest.approx(paper)


# --- pairs and (e) one optimisation step -----------------------------------------------------------------


def test_the_first_wrong_sample_is_rejected_and_all_correct_prompts_have_none():
    answers = frozenset({"038", "039"})
    assert first_wrong(["038", "039\nmore", "040", "041"], answers) == 2
    assert first_wrong([" 039 ", "038"], answers) is None


def test_prompts_whose_samples_are_all_correct_are_left_out(tiny, monkeypatch):
    _, data = tiny
    prompts = data.eval_prompts("train")
    eos, samples = data.eos_token_id, 3

    def fake_generation(model, batch, config):  # even prompts: only correct answers; odd: one wrong last
        rows = []
        for index in range(batch["input_ids"].shape[0]):
            prompt = next(p for p in prompts if list(p.prompt_ids) == _unpadded(batch, index, data))
            (right,) = data.token_ids([sorted(prompt.answers)[0]], special=False)
            (wrong,) = data.token_ids(["="], special=False)
            odd = prompts.index(prompt) % 2 == 1
            rows += [[*right, eos]] * (samples - 1) + [[*(wrong if odd else right), eos]]
        width = max(len(row) for row in rows)
        return torch.tensor([row + [data.pad_token_id] * (width - len(row)) for row in rows])

    monkeypatch.setattr(dpo, "generate_new_tokens", fake_generation)
    model = torch.nn.Linear(1, 1)  # only its device is read: generation is the fake above
    output = sample_pairs(model, data, Sampling(1.0, data.max_new_tokens), samples, batch_size=5, seed=0)
    assert output["prompt_index"].tolist() == list(range(1, len(prompts), 2))
    assert output["prompts"] == len(prompts)
    pairs = dpo.pairs_of(output, data)
    for index in output["prompt_index"].tolist():
        rejected = pairs[tuple(prompts[index].prompt_ids)]
        assert rejected[-1] == eos and decode_completion(data.tokenizer, rejected) == "="


def _unpadded(batch, row, data):
    return batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()


@pytest.mark.parametrize(
    "overrides",
    [["divergence=rkl"], ["divergence=kl"], ["divergence=js"], ["divergence=alpha", "divergence.alpha=0.4"]],
)
def test_one_step_lowers_the_f_dpo_loss_of_a_fixed_batch(tiny, overrides):
    cfg, data = tiny
    cfg = compose_config([*TINY, *overrides])
    module = build_in_memory(cfg, data)
    assert isinstance(module, DPOModule) and not any(p.requires_grad for p in module.reference.parameters())
    batch = next(iter(data.train_dataloader()))
    terms, count = module.pair_terms(batch)
    assert count == len(module.pairs) == len(data.eval_prompts("train"))  # untrained π₀: every prompt has one
    assert terms["loss"].item() == pytest.approx(math.log(2.0))  # π = π_ref: every reward is 0
    assert terms["reward_margin"].item() == 0.0
    optimizer = torch.optim.SGD(module.model.parameters(), lr=0.5)
    terms["loss"].backward()
    optimizer.step()
    after, _ = module.pair_terms(batch)
    assert after["loss"].item() < terms["loss"].item() - 1e-3
    assert after["reward_margin"].item() > 0.0 and after["reward_accuracy"].item() > 0.5


def test_pairs_hold_the_datas_correct_completion_and_a_wrong_sample_of_the_initial_policy(tiny):
    cfg, data = tiny
    module = build_in_memory(cfg, data)
    batch = next(iter(data.train_dataloader()))
    paired = pair_batch(batch, module.pairs, data.pad_token_id)
    rows = batch["input_ids"].shape[0]
    answers = {tuple(p.prompt_ids): p.answers for p in data.eval_prompts("train")}
    for row in range(rows):
        chosen, rejected = _completion(paired, row, data), _completion(paired, rows + row, data)
        prompt = tuple(_prompt(paired, row))
        assert prompt == tuple(_prompt(paired, rows + row))
        assert extract_answer(chosen) in answers[prompt] and extract_answer(rejected) not in answers[prompt]
    # the sequence log-probability is the sum of the completion tokens' log-probabilities, eos included
    logits = module.reference(input_ids=paired["input_ids"], attention_mask=paired["attention_mask"]).logits
    per_token = logits[:, :-1].log_softmax(-1).gather(-1, paired["input_ids"][:, 1:, None]).squeeze(-1)
    labelled = paired["labels"][:, 1:] != IGNORE_INDEX
    expected = (per_token * labelled).sum(1)
    torch.testing.assert_close(module.sequence_log_probs(module.reference, paired), expected)


def _prompt(batch, row):
    labelled = (batch["labels"][row] != IGNORE_INDEX).int().argmax()
    return batch["input_ids"][row, :labelled].tolist()


def _completion(batch, row, data):
    ids = batch["input_ids"][row][batch["labels"][row] != IGNORE_INDEX].tolist()
    return decode_completion(data.tokenizer, ids)


def test_the_reference_stays_out_of_checkpoints_and_keeps_its_weights_on_load(tiny):
    cfg, data = tiny
    module = build_in_memory(cfg, data)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["state_dict"] and not any(k.startswith("reference.") for k in checkpoint["state_dict"])
    reference = {k: v.clone() for k, v in module.reference.state_dict().items()}
    module.load_state_dict(checkpoint["state_dict"])
    for name, value in module.reference.state_dict().items():
        torch.testing.assert_close(value, reference[name])
    module.train()
    assert module.model.training and not module.reference.training


def test_a_run_logs_the_preference_terms_and_the_answer_metrics(tmp_path):
    threads = torch.get_num_threads()
    small = ["trainer.max_epochs=1", "method.evaluation.val_prompts=4", "method.evaluation.test_prompts=4"]
    try:
        record, run_dir = run_training(tmp_path, [*TINY, *small, "divergence=kl", "threads=1"])
    finally:
        torch.set_num_threads(threads)
    metrics = record["metrics"]
    assert record["method"] == "dpo" and record["divergence"] == "kl"
    for name in ("exact_match", "pass@1", "pass@16", "distinct_correct", "answer_entropy", "nll"):
        assert 0.0 <= metrics[f"test/{name}"] < float("inf"), name
    curves = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    for term in ("loss", "reward_margin", "reward_accuracy", "reward_chosen", "reward_rejected"):
        assert f"train/{term}_epoch" in curves, term
    assert (run_dir / "stages" / "pairs.pt").is_file()
