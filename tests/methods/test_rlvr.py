"""``method=rlvr`` / ``kdrl``: the objective against float64 re-computations from the raw logits, kdrl as
on-policy ``lm_kd``, the reward masks and β schedules, reference prefixes, PPO updates, checkpoints and the
refusals of the pre-flight."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf, open_dict

from divergence_lab import divergences
from divergence_lab.config.checks import validate
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.text.batches import IGNORE_INDEX, right_padded_batch
from divergence_lab.data.text.rows import EvalPrompt
from divergence_lab.data.text.tokenizer import build_char_tokenizer
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.lm_generation import Sampling
from divergence_lab.methods.lm_kd import LMDistillationModule
from divergence_lab.methods.rlvr import (
    REFERENCE_STREAM,
    PolicyOptimisationModule,
    regularised_samples,
    regulariser_description,
    scheduled_beta,
)
from divergence_lab.methods.rlvr import stages as rlvr_stages
from divergence_lab.methods.rollouts import Rollout, sample_rollout, step_seed
from divergence_lab.models.causal_lm import build_causal_lm
from tests.conftest import compose_config

LOCAL_MODEL = "divergence_lab.models.causal_lm.causal_lm_from_path"  # conf/model/lm_local.yaml's target

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
ALPHABET = "abcdefg"  # the character tokenizer's ids: <pad> 0, <bos> 1, <eos> 2, <unk> 3, then 4 .. 10
VOCAB, PAD, BOS, EOS = 4 + len(ALPHABET), 0, 1, 2
MAX_NEW = 4  # new tokens per sampled completion (the eos included)
NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
SMALL_CLIP = 0.01  # ε of the PPO test: one Adam step at lr 0.05 moves some ratios past 1 ± ε
STD_EPS = 1e-4  # TRL's constant added to the group std of the grpo advantage
EXPERIMENT = "experiment=rlvr_synthetic"
CPU = torch.device("cpu")
TOKENIZER = build_char_tokenizer(ALPHABET)
PROMPTS = [
    EvalPrompt("ab", [BOS, 4, 5], frozenset({"c"})),
    EvalPrompt("fed", [BOS, 9, 8, 7], frozenset({"a", "b"})),
]


def _gpt2(width: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = OmegaConf.create(
        {
            "_target_": "divergence_lab.models.causal_lm.causal_lm_from_config",
            "model_type": "gpt2",
            "sizes": {"n_layer": 1, "n_embd": width, "n_head": 2, "n_positions": 32, **NO_DROPOUT},
        }
    )
    return build_causal_lm(cfg, VOCAB, PAD, EOS, BOS).double()


def first_letter_reward(prompt: str, completion: str, answers: frozenset) -> float:
    """A verifier that gives both outcomes on a random policy: 1 when the completion starts with a correct
    answer's letter."""
    return float(completion[:1] in answers)


@pytest.fixture(scope="module")
def rlvr_method() -> DictConfig:
    return compose_config([EXPERIMENT]).method


def _settings(method: DictConfig, **changes) -> DictConfig:
    """A copy of ``method`` with ``changes``; ``__`` stands for a key's dots (``regulariser__beta``)."""
    settings = OmegaConf.merge(method, {})
    for key, value in changes.items():
        OmegaConf.update(settings, key.replace("__", "."), value, merge=False)
    return settings


def _module(settings: DictConfig, divergence: str = "kl", reference: bool = True) -> PolicyOptimisationModule:
    return PolicyOptimisationModule(
        _gpt2(8, seed=0),
        _gpt2(16, seed=1) if reference else None,
        divergences.build(divergence),
        divergence,
        settings,
        {tuple(prompt.prompt_ids): prompt for prompt in PROMPTS},
        TOKENIZER,
        first_letter_reward,
        Sampling(temperature=settings.generation.temperature, max_new_tokens=MAX_NEW),
        (PAD, EOS),
        seed=0,
        max_epochs=1,
        evaluation={},
    )


def _rollout(completions: list[list[int]], rewards: list[list[float]]) -> Rollout:
    """A rollout of :data:`PROMPTS`, ``len(completions) / 2`` completions each (eos included)."""
    group = len(completions) // len(PROMPTS)
    prompts = [prompt.prompt_ids for prompt in PROMPTS for _ in range(group)]
    examples = [
        (prompt + completion, len(prompt)) for prompt, completion in zip(prompts, completions, strict=True)
    ]
    return Rollout(right_padded_batch(examples, PAD), torch.tensor(rewards, dtype=F64), [""] * len(examples))


def _policy_rollout() -> Rollout:
    completions = [[4, 6, EOS], [EOS], [5, 5, 9, EOS], [10, EOS], [7, 8, 6, EOS], [4, 4, EOS]]
    return _rollout(completions, [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])


def _reference_rollout() -> Rollout:
    completions = [[9, 9, 9, EOS], [6, EOS], [EOS], [4, 5, 6, EOS], [8, EOS], [10, 7, EOS]]
    return _rollout(completions, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])


# --- independent re-computations from the raw logits --------------------------------------------------------


def _token_log_probs(model, batch, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log softmax(z/T) (S, T−1, V), log π(y_t) (S, T−1), mask of the labelled next tokens (S, T−1))."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    log_pi = F.log_softmax(logits / temperature, dim=-1)
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    sampled = log_pi.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
    return log_pi, torch.where(mask, sampled, torch.zeros_like(sampled)), mask


def _grpo_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """(r − mean of the group) / (Bessel std of the group + 1e-4), flattened to (P·G,)."""
    group = rewards.shape[1]
    mean = rewards.sum(1, keepdim=True) / group
    std = ((rewards - mean).square().sum(1, keepdim=True) / (group - 1)).sqrt()
    return ((rewards - mean) / (std + STD_EPS)).reshape(-1)


def _forward_kl(log_ref: torch.Tensor, log_pi: torch.Tensor) -> torch.Tensor:
    """KL(ref‖π) per position: Σ_v ref(v) (log ref(v) − log π(v))."""
    return (log_ref.exp() * (log_ref - log_pi)).sum(-1)


def _future(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_{s>t} m_s v_s, detached, by an explicit loop over positions."""
    out = torch.zeros_like(values)
    for t in range(values.shape[1]):
        out[:, t] = (values.detach()[:, t + 1 :] * mask[:, t + 1 :]).sum(1)
    return out


def _regulariser_by_hand(module, batch, temperature: float, gradient: str) -> tuple:
    """(per-token KL(ref‖π) surrogate with its gradient form, the detached values, the mask) on ``batch``."""
    log_pi, logp, mask = _token_log_probs(module.model, batch, temperature)
    with torch.no_grad():
        log_ref, _, _ = _token_log_probs(module.reference, batch, temperature)
    kl = _forward_kl(log_ref, log_pi)
    surrogate = kl if gradient == "local" else kl + _future(kl, mask) * logp
    return surrogate, kl.detach(), mask


def _loss_by_hand(module, rollout, old_logp, settings, beta: float, reference_rollout=None) -> torch.Tensor:
    """w · Σ m pg / N + β · Σ m a R / N − c · Σ m H / N on the token sums of a ``dapo`` batch (N: the active
    tokens), the regulariser on ``reference_rollout``'s batch when given."""
    temperature, clip = settings.generation.temperature, settings.clip
    log_pi, logp, mask = _token_log_probs(module.model, rollout.batch, temperature)
    advantages = _grpo_advantages(rollout.rewards)[:, None]
    ratio = torch.exp(logp - old_logp)
    clipped = ratio.clamp(1 - clip.epsilon_low, 1 + clip.epsilon_high)
    pg = -torch.minimum(ratio * advantages, clipped * advantages)
    entropy = -(log_pi.exp() * log_pi).sum(-1)
    on = rollout if reference_rollout is None else reference_rollout
    surrogate, _, on_mask = _regulariser_by_hand(module, on.batch, temperature, settings.regulariser.gradient)
    applied = regularised_by_hand(rollout.rewards, settings.regulariser.apply_to)[:, None]
    tokens = mask.sum()
    return (
        settings.reward_weight * (pg * mask).sum() / tokens
        + beta * (applied * surrogate * on_mask).sum() / on_mask.sum()
        - settings.entropy_coef * (entropy * mask).sum() / tokens
    )


def regularised_by_hand(rewards: torch.Tensor, apply_to: str) -> torch.Tensor:
    """Row weights: 1 for all, for rewards below 1 (incorrect) or as a literal group rule, by a loop."""
    rows = []
    for group in rewards.tolist():
        solved, failed = all(r >= 1 for r in group), not any(r >= 1 for r in group)
        for r in group:
            rows.append(
                {"all": 1, "none": 0, "incorrect": r < 1, "failed_groups": failed, "solved_groups": solved}[
                    apply_to
                ]
            )
    return torch.tensor(rows, dtype=F64)


def _grads(value: torch.Tensor, module) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(value, list(module.model.parameters()))


# --- 1. kdrl with reward weight 0 is on-policy lm_kd --------------------------------------------------------


def test_kdrl_without_rewards_is_fully_on_policy_lm_kd_on_the_same_samples():
    """reward_weight 0, exact local rkl to the teacher, β 1, bnpo: the loss and every parameter gradient are
    those of lm_kd (alpha 1, on_policy_fraction 1, rkl) on the same sampled completions."""
    method = compose_config(["experiment=kdrl_synthetic"]).method
    settings = _settings(method, reward_weight=0.0, aggregation="bnpo")
    assert (settings.reference, settings.regulariser.estimator, settings.regulariser.gradient) == (
        "teacher",
        "exact",
        "local",
    )
    module = _module(settings, divergence="rkl")
    teacher = module.reference
    distiller = LMDistillationModule(
        module.model,
        teacher,
        divergences.build("rkl"),
        alpha=1.0,
        on_policy_fraction=1.0,
        sampling=module.sampling,
        special_tokens=(PAD, EOS),
        seed=0,
        optimizer=dict(settings.optimizer),
        max_epochs=1,
        evaluation={},
    )
    rollout = sample_rollout(
        module.model, PROMPTS, 3, module.sampling, (PAD, EOS), TOKENIZER, first_letter_reward, 7, CPU
    )
    batch = rollout.batch
    assert int((batch["labels"] != IGNORE_INDEX).sum()) > batch["labels"].shape[0]  # not all bare eos
    with torch.no_grad():
        old = module.token_log_probs(module.policy_predictions(module.model, batch), batch)
    advantages = torch.linspace(-1.0, 1.0, 6, dtype=F64)  # weighted by reward_weight 0
    terms = module.objective(rollout, None, advantages, old, 1.0)
    expected = distiller.distillation(distiller.predictions(distiller.model, batch), batch)
    torch.testing.assert_close(terms["loss"], expected, **TIGHT)
    for got, want in zip(_grads(terms["loss"], module), _grads(expected, module), strict=True):
        torch.testing.assert_close(got, want, **TIGHT)


# --- 2. the objective from the raw logits -------------------------------------------------------------------


FLOAT32 = {"rtol": 1e-6, "atol": 1e-7}


@pytest.mark.parametrize(
    ("gradient", "apply_to", "temperature", "entropy_coef"),
    [
        ("local", "all", 1.0, 0.0),
        ("sequence", "incorrect", 2.0, 0.0),
        ("local", "failed_groups", 1.0, 0.0),
        ("local", "all", 1.0, 0.01),
        ("sequence", "incorrect", 2.0, 0.01),
    ],
)
def test_objective_is_the_grpo_dapo_forward_kl_entropy_loss_from_the_raw_logits(
    rlvr_method, gradient, apply_to, temperature, entropy_coef
):
    """grpo advantages, the clipped ratio against perturbed old log-probabilities, β · KL(ref‖π) exact
    (local, or with the future term of ``gradient: sequence``) on the rows ``apply_to`` picks, minus the
    entropy bonus, all aggregated as ``dapo``: value and every parameter gradient."""
    settings = _settings(
        rlvr_method,
        advantage="grpo",
        scale_rewards="group",
        aggregation="dapo",
        entropy_coef=entropy_coef,
        regulariser__estimator="exact",
        regulariser__gradient=gradient,
        regulariser__apply_to=apply_to,
        generation__temperature=temperature,
    )
    module, rollout, beta = _module(settings, divergence="kl"), _policy_rollout(), 0.3
    with torch.no_grad():
        _, logp, mask = _token_log_probs(module.model, rollout.batch, temperature)
    generator = torch.Generator().manual_seed(0)
    old = logp + 0.3 * torch.randn(logp.shape, dtype=F64, generator=generator) * mask  # some ratios clip
    advantages = _grpo_advantages(rollout.rewards)
    terms = module.objective(rollout, None, advantages, old, beta)
    expected = _loss_by_hand(module, rollout, old, settings, beta)
    torch.testing.assert_close(terms["loss"], expected, **TIGHT)
    for got, want in zip(_grads(terms["loss"], module), _grads(expected, module), strict=True):
        torch.testing.assert_close(got, want, **TIGHT)
    _, kl, kl_mask = _regulariser_by_hand(module, rollout.batch, temperature, gradient)
    torch.testing.assert_close(terms["divergence"], kl[kl_mask].mean(), **TIGHT)
    with torch.no_grad():
        log_pi, _, _ = _token_log_probs(module.model, rollout.batch, temperature)
        log_ref, _, _ = _token_log_probs(module.reference, rollout.batch, temperature)
    drift = {
        "kl_forward": _forward_kl(log_ref, log_pi)[mask].mean(),
        "kl_reverse": _forward_kl(log_pi, log_ref)[mask].mean(),  # KL(π‖ref): the arguments swapped
        "policy_entropy": -(log_pi.exp() * log_pi).sum(-1)[mask].mean(),
    }
    for name, value in drift.items():
        tolerance = FLOAT32 if name == "policy_entropy" and entropy_coef == 0 else TIGHT
        torch.testing.assert_close(terms[name].double(), value, **tolerance, msg=name)
    entropy = {"entropy"} if entropy_coef > 0 else set()
    assert set(terms) == {"loss", "policy_gradient", "regulariser", "divergence", *drift, *entropy}


# --- 3. masks, schedules and descriptions -------------------------------------------------------------------


REWARDS = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.5], [1.0, 0.0, 2.0]])


@pytest.mark.parametrize(
    ("apply_to", "expected"),
    [
        ("all", [1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ("incorrect", [0, 0, 0, 1, 1, 1, 0, 1, 0]),
        ("failed_groups", [0, 0, 0, 1, 1, 1, 0, 0, 0]),
        ("solved_groups", [1, 1, 1, 0, 0, 0, 0, 0, 0]),
        ("none", [0, 0, 0, 0, 0, 0, 0, 0, 0]),
    ],
)
def test_regularised_samples_follow_the_reward_rule(apply_to, expected):
    mask = regularised_samples(REWARDS, apply_to)
    assert mask.dtype == torch.float32 and mask.tolist() == expected
    assert mask.tolist() == regularised_by_hand(REWARDS, apply_to).tolist()


@pytest.mark.parametrize(
    ("schedule", "values"),
    [
        ("constant", [0.5, 0.5, 0.5, 0.5]),
        ("linear", [0.5, 0.4, 0.3, 0.1]),
        ("cosine", [0.5, 0.1 + 0.2 * (1 + math.cos(math.pi / 4)), 0.3, 0.1]),
    ],
)
def test_beta_schedules_go_from_beta_to_beta_final(schedule, values):
    regulariser = OmegaConf.create({"beta": 0.5, "beta_final": 0.1, "beta_schedule": schedule})
    got = [scheduled_beta(regulariser, progress) for progress in (0.0, 0.25, 0.5, 1.0)]
    assert got == pytest.approx(values, rel=1e-12)
    unset = OmegaConf.create({"beta": 0.5, "beta_final": None, "beta_schedule": schedule})
    assert scheduled_beta(unset, 0.7) == 0.5


def test_descriptions_name_the_direction_in_words(rlvr_method):
    regulariser = rlvr_method.regulariser
    forward = regulariser_description("kl", regulariser, "init")
    reverse = regulariser_description("rkl", regulariser, "init")
    k3 = regulariser_description("kl", _settings(regulariser, estimator="k3"), "init")
    assert "forward" in forward and "reverse" not in forward and "KL(reference ‖ policy)" in forward
    assert "reverse" in reverse and "forward" not in reverse and "KL(policy ‖ reference)" in reverse
    assert "k3: descends KL(ref‖π), forward" in k3
    assert "none" in regulariser_description("kl", regulariser, "none")
    assert "beta = 0" in regulariser_description("kl", _settings(regulariser, beta=0.0), "init")
    assert "gjs" in regulariser_description("gjs", regulariser, "init")


# --- 4. reference prefixes and PPO updates ------------------------------------------------------------------


def test_reference_prefixes_take_the_regulariser_on_the_reference_rollout(rlvr_method):
    """The policy's rewards pick the rows (its first group failed), the reference's samples hold them."""
    settings = _settings(
        rlvr_method,
        regulariser__prefixes="reference",
        regulariser__apply_to="failed_groups",
        aggregation="dapo",
    )
    module, reference_rollout, beta = _module(settings), _reference_rollout(), 0.7
    rollout = Rollout(
        _policy_rollout().batch, torch.tensor([[0.0, 0.0, 0.5], [0.0, 1.0, 1.0]], dtype=F64), []
    )
    with torch.no_grad():
        _, old, _ = _token_log_probs(module.model, rollout.batch, 1.0)
    terms = module.objective(rollout, reference_rollout, _grpo_advantages(rollout.rewards), old, beta)
    expected = _loss_by_hand(module, rollout, old, settings, beta, reference_rollout)
    torch.testing.assert_close(terms["loss"], expected, **TIGHT)
    for got, want in zip(_grads(terms["loss"], module), _grads(expected, module), strict=True):
        torch.testing.assert_close(got, want, **TIGHT)
    on_reference, _, mask = _regulariser_by_hand(module, reference_rollout.batch, 1.0, "local")
    on_policy, _, policy_mask = _regulariser_by_hand(module, rollout.batch, 1.0, "local")
    failed = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=F64)[:, None]
    on_the_reference = (failed * on_reference * mask).sum() / mask.sum()
    on_the_policy = (failed * on_policy * policy_mask).sum() / policy_mask.sum()
    torch.testing.assert_close(terms["regulariser"], on_the_reference.detach(), **TIGHT)
    assert not torch.isclose(terms["regulariser"], on_the_policy)


def test_reference_prefixes_sample_the_reference_on_its_own_stream(rlvr_method):
    module = _module(_settings(rlvr_method, group_size=3, regulariser__prefixes="reference"))
    batch = right_padded_batch(
        [(prompt.prompt_ids + [4, EOS], len(prompt.prompt_ids)) for prompt in PROMPTS], PAD
    )
    policy, reference = module.rollout(batch, step=5)
    draw = (PROMPTS, 3, module.sampling, (PAD, EOS), TOKENIZER, first_letter_reward)
    expected = sample_rollout(module.reference, *draw, step_seed(0, 5, REFERENCE_STREAM), CPU)
    assert reference is not None and reference.texts == expected.texts
    assert torch.equal(reference.batch["input_ids"], expected.batch["input_ids"])
    assert policy.texts != reference.texts and policy.rewards.shape == (2, 3)
    module.regulariser.prefixes = "policy"
    assert module.rollout(batch, step=5)[1] is None


def test_two_updates_per_batch_start_at_ratio_one_and_log_the_clip_fraction(rlvr_method, monkeypatch):
    settings = _settings(
        rlvr_method,
        group_size=3,
        updates_per_batch=2,
        clip__epsilon_low=SMALL_CLIP,
        clip__epsilon_high=SMALL_CLIP,
        optimizer__lr=0.05,
    )
    module = _module(settings)
    calls = []
    objective = module.objective

    def recorded(rollout, reference_rollout, advantages, old_log_probs, beta):
        with torch.no_grad():
            _, current, mask = _token_log_probs(module.model, rollout.batch, 1.0)
        terms = objective(rollout, reference_rollout, advantages, old_log_probs, beta)
        calls.append((current, old_log_probs.clone(), mask, terms["clip_fraction"]))
        return terms

    monkeypatch.setattr(module, "objective", recorded)
    batch = right_padded_batch(
        [(prompt.prompt_ids + [4, EOS], len(prompt.prompt_ids)) for prompt in PROMPTS], PAD
    )
    trainer = L.Trainer(
        max_steps=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    (first, first_old, mask, first_clip), (second, second_old, _, second_clip) = calls
    torch.testing.assert_close(first[mask], first_old[mask], **TIGHT)  # ratio 1 on the first update
    assert first_clip == 0.0 and torch.equal(first_old, second_old)
    ratio = (second - second_old).exp()[mask]
    assert not torch.allclose(ratio, torch.ones_like(ratio))
    clipped = ((ratio < 1 - SMALL_CLIP) | (ratio > 1 + SMALL_CLIP)).double().mean()
    assert float(clipped) > 0.0 and float(second_clip) == pytest.approx(float(clipped), abs=1e-12)
    assert "train/clip_fraction" in trainer.callback_metrics


# --- 5. checkpoints -----------------------------------------------------------------------------------------


def test_the_reference_stays_out_of_checkpoints_and_keeps_its_weights_on_load(rlvr_method):
    module, other = _module(rlvr_method), _module(rlvr_method)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    state = checkpoint["state_dict"]
    assert (
        state
        and not any(k.startswith("reference.") for k in state)
        and any(k.startswith("model.") for k in state)
    )
    reference = {k: v.clone() for k, v in other.reference.state_dict().items()}
    other.load_state_dict(state)
    assert all(
        torch.equal(a, b) for a, b in zip(other.model.parameters(), module.model.parameters(), strict=True)
    )
    assert all(torch.equal(v, reference[k]) for k, v in other.reference.state_dict().items())
    assert not torch.equal(
        other.reference.state_dict()[next(iter(reference))],
        module.reference.state_dict()[next(iter(reference))],
    )
    without = _module(_settings(rlvr_method, reference="none", regulariser__beta=0.0), reference=False)
    without.load_state_dict(state)
    assert all(
        torch.equal(a, b) for a, b in zip(without.model.parameters(), module.model.parameters(), strict=True)
    )


# --- 6. the pre-flight --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["divergence=sinkhorn_batch"],
            "divergence=sinkhorn_batch is a batch member; method=rlvr takes pointwise",
        ),
        (
            ["method.group_size=1"],
            "method.advantage=grpo compares the samples of a group: method.group_size must",
        ),
        (["method.advantage=pass_at_k", "method.pass_k=9"], "method.pass_k=9 must be <= method.group_size=8"),
        (
            ["method.regulariser.prefixes=reference", "method.regulariser.estimator=k3"],
            "prefixes=reference takes the divergence on the reference's own samples",
        ),
        (
            ["method.regulariser.prefixes=reference", "method.regulariser.apply_to=incorrect"],
            "apply_to=incorrect marks the policy's own samples",
        ),
        (["method.reference=none"], "method.reference=none has no regulariser"),
        (
            ["method.reference=none", "method.regulariser.beta=0", "method.regulariser.beta_final=0.2"],
            "method.reference=none has no regulariser",
        ),
        (
            ["method.regulariser.estimator=k7"],
            "method.regulariser.estimator must be one of exact, k1, k2, k3",
        ),
        (["method.optimizer.scheduler=cosine"], "method.optimizer.scheduler: rlvr steps its own optimiser"),
    ],
)
def test_bad_settings_are_refused_in_one_line_before_training(overrides, message):
    with pytest.raises(ConfigError) as refused:
        validate(compose_config([EXPERIMENT, *overrides]))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_reference_none_without_beta_is_accepted():
    validate(compose_config([EXPERIMENT, "method.reference=none", "method.regulariser.beta=0"]))


def _kdrl_checks(cfg: DictConfig, divergence: str) -> None:
    validate(cfg)
    regulariser = cfg.method.regulariser
    assert (cfg.method.name, cfg.method.reference, cfg.divergence.name) == ("kdrl", "teacher", divergence)
    assert (regulariser.beta_schedule, regulariser.beta, regulariser.beta_final) == ("linear", 0.5, 0.1)
    assert (regulariser.estimator, regulariser.gradient) == ("exact", "local")
    assert cfg.method.builder == "divergence_lab.methods.rlvr.build"


def test_the_kdrl_preset_distils_the_teacher_by_reverse_kl():
    _kdrl_checks(compose_config(["experiment=kdrl_synthetic"]), "rkl")


@pytest.mark.parametrize(("overrides", "divergence"), [([], "rkl"), (["divergence=js"], "js")])
def test_kdrl_defaults_to_reverse_kl_and_takes_the_command_lines_divergence(overrides, divergence):
    _kdrl_checks(compose_config([EXPERIMENT, "method=kdrl", *overrides]), divergence)


@pytest.mark.parametrize(
    ("regulariser", "divergence", "estimator", "words"),
    [
        ("none", "kl", "exact", "regulariser: none"),
        ("kl", "kl", "exact", "forward"),
        ("rkl", "rkl", "exact", "reverse"),
        ("js", "js", "exact", "js(policy, reference)"),
        ("gjs", "gjs", "exact", "gjs(policy, reference)"),
        ("tv", "tv", "exact", "tv(policy, reference)"),
        ("k3", "kl", "k3", "k3: descends KL(ref‖π), forward"),
        ("k2", "rkl", "k2", "k2: descends KL(π‖ref), reverse"),
    ],
)
def test_every_rl_regulariser_composes_and_validates(regulariser, divergence, estimator, words):
    cfg = compose_config([EXPERIMENT, f"+rl_regulariser={regulariser}"])
    validate(cfg)
    method = cfg.method
    assert (cfg.divergence.name, method.regulariser.estimator) == (divergence, estimator)
    assert (method.regulariser.apply_to == "none") == (regulariser == "none")
    assert words in regulariser_description(cfg.divergence.name, method.regulariser, method.reference)


def test_a_reference_teacher_that_does_not_share_the_tokenizer_is_refused_before_any_stage(tmp_path):
    """kdrl's reference is the teacher: a saved teacher with another tokenizer is refused in one line by the
    stages' checks, before the initial policy or the teacher trains."""
    cfg = compose_config(
        ["experiment=kdrl_synthetic", "data.train_prompts=16", "data.val_prompts=4", "data.test_prompts=4"]
    )
    data = instantiate_datamodule(cfg.data, seed=0)
    other = tmp_path / "other"
    saved = build_causal_lm(cfg.method.teacher.model, data.vocab_size, data.pad_token_id, data.eos_token_id)
    saved.save_pretrained(other)
    build_char_tokenizer("abcdefghijklmnop").save_pretrained(other)
    changed = cfg.copy()
    with open_dict(changed):
        changed.method.teacher.model = {"_target_": LOCAL_MODEL, "path": str(other)}
    with pytest.raises(ConfigError) as refused:
        rlvr_stages(changed, data)
    message = str(refused.value)
    assert "\n" not in message
    assert f"method.teacher.model.path: the tokenizer saved in {other} is not the data's" in message


def test_the_initial_policy_can_be_a_finished_runs_tested_network(tmp_path):
    """``method.initial.from_run``: the ``model.`` weights of the run's best.ckpt (else last.ckpt) become the
    initial policy, without SFT; a folder without a finished run, or with a network of another shape, is
    refused in one line."""
    from divergence_lab.methods.initial_policy import policy_stages
    from divergence_lab.methods.stages import StageContext

    small = ["data.train_prompts=16", "data.val_prompts=4", "data.test_prompts=4"]
    run = tmp_path / "lm_kd_run"
    cfg = compose_config([EXPERIMENT, *small, f"method.initial.from_run={run}"])
    data = instantiate_datamodule(cfg.data, seed=0)
    trained = build_causal_lm(cfg.model, data.vocab_size, data.pad_token_id, data.eos_token_id)
    (run / "checkpoints").mkdir(parents=True)
    state = {f"model.{name}": value for name, value in trained.state_dict().items()}
    torch.save({"state_dict": {**state, "teacher.w": torch.ones(1)}}, run / "checkpoints" / "best.ckpt")

    def initial() -> dict:
        (stage,) = policy_stages(cfg, data)
        return stage.run(StageContext())["state"]

    with pytest.raises(ConfigError, match=f"method.initial.from_run: {run} holds no finished run"):
        initial()
    (run / "metrics.json").write_text("{}")
    loaded = initial()
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)

    with open_dict(cfg):
        cfg.model.sizes.n_embd = 32  # another shape than the saved network's
    with pytest.raises(ConfigError) as refused:
        initial()
    assert "\n" not in str(refused.value) and "is not this run's model" in str(refused.value)
