"""Our RL pieces give the values and gradients of TRL, verl and OpenRLHF, each re-derived in float64.

Every ``trl_*``, ``verl_*`` and ``openrlhf_*`` function below is written from the peer's code as read at the
commit named in its docstring. Inputs are random float64 log-probabilities of sampled tokens with
|log π_ref − log π| < 2, where none of the peers' clamps act (the clamps themselves are pinned separately).
"""

from __future__ import annotations

import pytest
import torch

from divergence_lab.methods.divergence_estimators import regulariser_surrogate, sampled_estimator_terms
from divergence_lab.methods.group_advantages import aggregate_tokens, clipped_policy_loss, group_advantages

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
PROMPTS, GROUP, LENGTH, MAX_COMPLETION = 3, 4, 6, 8
EPSILON_LOW, EPSILON_HIGH, BETA = 0.2, 0.28, 0.04
TRL_STD_EPS = 1e-4
VERL_LOG_RATIO_CLAMP, VERL_KL_CLAMP, OPENRLHF_CLAMP = 20.0, 10.0, 10.0


def random_batch(seed: int) -> dict[str, torch.Tensor]:
    """Sampled-token log-probabilities of π (a leaf), π_old, π_ref, a completion mask with one empty
    completion, and group rewards with a tie-free spread."""
    generator = torch.Generator().manual_seed(seed)
    rows = PROMPTS * GROUP
    logp = -3.0 * torch.rand(rows, LENGTH, dtype=F64, generator=generator)
    lengths = torch.randint(1, LENGTH + 1, (rows,), generator=generator)
    lengths[-1] = 0
    old_logp = logp + 0.25 * torch.randn(rows, LENGTH, dtype=F64, generator=generator)
    ref_logp = logp + 0.6 * torch.randn(rows, LENGTH, dtype=F64, generator=generator).clamp(-3.0, 3.0)
    return {
        "logp": logp.requires_grad_(True),
        "old_logp": old_logp,
        "ref_logp": ref_logp,
        "mask": torch.arange(LENGTH)[None, :] < lengths[:, None],
        "rewards": torch.randn(PROMPTS, GROUP, dtype=F64, generator=generator),
    }


def value_and_grad(value: torch.Tensor, leaf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    (gradient,) = torch.autograd.grad(value.sum(), leaf, retain_graph=True)
    return value.detach(), gradient


def assert_same(ours: torch.Tensor, theirs: torch.Tensor, leaf: torch.Tensor, **tol) -> None:
    """Same values and the same gradient with respect to ``leaf``."""
    ours_value, ours_grad = value_and_grad(ours, leaf)
    theirs_value, theirs_grad = value_and_grad(theirs, leaf)
    torch.testing.assert_close(ours_value, theirs_value, **(tol or TIGHT))
    torch.testing.assert_close(ours_grad, theirs_grad, **(tol or TIGHT))


# ------------------------------------------------------------------------------------------------------
# TRL GRPOTrainer
# ------------------------------------------------------------------------------------------------------


def trl_nanstd_free(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """TRL's ``nanstd`` without NaNs: the Bessel-corrected std (huggingface/trl
    f2cd57710ae345ea6428ae95363267fcf38a3dc8, trl/trainer/utils.py)."""
    mean = x.mean() if dim is None else x.mean(dim, keepdim=True)
    count = x.numel() if dim is None else x.shape[dim]
    return (
        (((x - mean) ** 2).mean() if dim is None else ((x - mean) ** 2).mean(dim))
        .mul(count / (count - 1))
        .sqrt()
    )


def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """Advantages of flat rewards, ``sum_then_normalize`` with one reward function (huggingface/trl
    f2cd57710ae345ea6428ae95363267fcf38a3dc8, trl/trainer/grpo_trainer.py, _generate_and_score_completions):
    group mean repeated over the group; std per group (``group``/``none``) or of the batch (``batch``);
    (r − mean), divided by (std + 1e-4) unless ``none``."""
    grouped = rewards.view(-1, num_generations)
    mean = grouped.mean(1).repeat_interleave(num_generations)
    if scale_rewards == "batch":
        std = trl_nanstd_free(rewards, None).expand_as(rewards)
    else:
        std = trl_nanstd_free(grouped, 1).repeat_interleave(num_generations)
    advantages = rewards - mean
    return advantages if scale_rewards == "none" else advantages / (std + TRL_STD_EPS)


def trl_loss(batch: dict, advantages: torch.Tensor, loss_type: str, bias_correction: bool, old: torch.Tensor):
    """GRPOTrainer's loss for token-level importance sampling, no delta, no masks besides the completion
    mask, one process, no gradient accumulation (huggingface/trl f2cd57710ae345ea6428ae95363267fcf38a3dc8,
    trl/trainer/grpo_trainer.py, _compute_loss): coef_1 = exp(logp − old), per-token
    −min(coef_1·A, clamp(coef_1, 1−ε_low, 1+ε_high)·A) + β·k3 (k3 × coef_1 with use_bias_correction_kl),
    then the loss_type's normaliser (dapo: num_items_in_batch = active tokens / num_processes = 1)."""
    logp, ref, mask = batch["logp"], batch["ref_logp"], batch["mask"].to(F64)
    coef_1 = torch.exp(logp - old)
    kl = torch.exp(ref - logp) - (ref - logp) - 1
    if bias_correction:
        kl = kl * coef_1
    coef_2 = torch.clamp(coef_1, 1 - EPSILON_LOW, 1 + EPSILON_HIGH)
    a = advantages.unsqueeze(1)
    per_token = -torch.min(coef_1 * a, coef_2 * a) + BETA * kl
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (per_token.size(0) * MAX_COMPLETION)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)  # dapo


def ours_grpo_loss(batch: dict, scale_rewards: str, loss_type: str, bias_correction: bool, old: torch.Tensor):
    advantages = group_advantages(batch["rewards"], "grpo", scale_rewards).reshape(-1)
    estimator = "k3_is" if bias_correction else "k3"
    local, values = sampled_estimator_terms(estimator, batch["logp"], batch["ref_logp"])
    regulariser = regulariser_surrogate(local, values, batch["logp"], batch["mask"], "local")
    per_token = (
        clipped_policy_loss(batch["logp"], old, advantages, EPSILON_LOW, EPSILON_HIGH) + BETA * regulariser
    )
    return aggregate_tokens(per_token, batch["mask"], loss_type, MAX_COMPLETION), advantages


@pytest.mark.parametrize("bias_correction", [False, True])
@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_trl_grpo_loss_values_and_gradients(
    loss_type: str, scale_rewards: str, bias_correction: bool
) -> None:
    batch = random_batch(1)
    # TRL's bias-corrected KL is weighted by exp(logp − old); ours by exp(logp − sg(logp)): equal on policy
    olds = [batch["logp"].detach()] + ([] if bias_correction else [batch["old_logp"]])
    for old in olds:
        ours, advantages = ours_grpo_loss(batch, scale_rewards, loss_type, bias_correction, old)
        want_advantages = trl_advantages(batch["rewards"].reshape(-1), GROUP, scale_rewards)
        torch.testing.assert_close(advantages, want_advantages, **TIGHT)
        assert_same(ours, trl_loss(batch, want_advantages, loss_type, bias_correction, old), batch["logp"])


def test_off_policy_trl_bias_correction_weights_by_the_old_policy_ours_does_not() -> None:
    batch = random_batch(2)
    ours, advantages = ours_grpo_loss(batch, "group", "bnpo", True, batch["old_logp"])
    theirs = trl_loss(batch, advantages, "bnpo", True, batch["old_logp"])
    assert (ours - theirs).abs() > 1e-6


# ------------------------------------------------------------------------------------------------------
# verl
# ------------------------------------------------------------------------------------------------------


def verl_kl_penalty_forward(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str) -> torch.Tensor:
    """verl's ``kl_penalty_forward`` (volcengine/verl b178a3cd56f58b2d502255daba591e92833930a7,
    verl/trainer/ppo/core_algos.py): k1/kl = logp − ref; abs = |logp − ref|; k2/mse = ½(logp − ref)²;
    k3/low_var_kl: x = clamp(ref − logp, ±20), clamp(e^x − x − 1, ±10)."""
    if kind in ("kl", "k1"):
        return logprob - ref_logprob
    if kind == "abs":
        return (logprob - ref_logprob).abs()
    if kind in ("mse", "k2"):
        return 0.5 * (logprob - ref_logprob).square()
    x = torch.clamp(ref_logprob - logprob, -VERL_LOG_RATIO_CLAMP, VERL_LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(x) - x - 1, -VERL_KL_CLAMP, VERL_KL_CLAMP)


def verl_kl_penalty(logprob: torch.Tensor, ref_logprob: torch.Tensor, kind: str) -> torch.Tensor:
    """verl's ``kl_penalty`` (same commit and file): a name ending in "+" keeps the value of the estimator
    and takes the gradient of k2 = ½(logp − ref)² (straight-through). At this commit ``kl_penalty`` hands the
    name *with* its "+" to ``kl_penalty_forward``, which knows only the bare names and raises
    NotImplementedError, so "k1+"/"k3+" fail there; this re-derivation passes the bare name, the behaviour
    its docs (docs/algo/grpo.md) describe."""
    forward = verl_kl_penalty_forward(logprob, ref_logprob, kind.rstrip("+"))
    if not kind.endswith("+"):
        return forward
    backward = 0.5 * (logprob - ref_logprob).square()
    return backward - backward.detach() + forward.detach()


def verl_agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, mode: str, loss_scale_factor=None):
    """verl's ``agg_loss`` with dp_size = 1 and no global token or sequence counts (same commit and file):
    token-mean Σ m ℓ / Σ m; seq-mean-token-mean: per-sequence Σ m ℓ / (Σ m + 1e-8) averaged over the
    sequences with a token; seq-mean-token-sum: per-sequence sums averaged over those sequences;
    seq-mean-token-sum-norm: Σ m ℓ / loss_scale_factor (default: the padded length T)."""
    mask = loss_mask.to(loss_mat.dtype)
    if mode == "token-mean":
        return (loss_mat * mask).sum() / mask.sum()
    counts = mask.sum(-1)
    nonempty = (counts > 0).to(loss_mat.dtype)
    if mode == "seq-mean-token-sum":
        return ((loss_mat * mask).sum(-1) * nonempty).sum() / nonempty.sum()
    if mode == "seq-mean-token-mean":
        return ((loss_mat * mask).sum(-1) / (counts + 1e-8) * nonempty).sum() / nonempty.sum()
    factor = loss_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor
    return (loss_mat * mask).sum(-1).sum() / factor


@pytest.mark.parametrize(
    ("verl_name", "ours"),
    [("k1", "k1"), ("kl", "k1"), ("k2", "k2"), ("mse", "k2"), ("k3", "k3"), ("low_var_kl", "k3")],
)
def test_verl_kl_penalty_matches_our_estimators(verl_name: str, ours: str) -> None:
    batch = random_batch(3)
    logp, ref = batch["logp"], batch["ref_logp"]
    assert (ref - logp).abs().max() < 2.0  # inside verl's clamps
    local, _ = sampled_estimator_terms(ours, logp, ref)
    assert_same(local, verl_kl_penalty(logp, ref, verl_name), logp)


def test_verl_straight_through_variants() -> None:
    """k3+: the value of k3 and the gradient of k2 — our k3_is on policy; k1+: the value of k1 with the
    gradient of k2 (= the gradient of our k1_reward)."""
    batch = random_batch(4)
    logp, ref = batch["logp"], batch["ref_logp"]
    k3_is, _ = sampled_estimator_terms("k3_is", logp, ref)
    assert_same(k3_is, verl_kl_penalty(logp, ref, "k3+"), logp)
    k1_plus = verl_kl_penalty(logp, ref, "k1+")
    k1, _ = sampled_estimator_terms("k1", logp, ref)
    k2, _ = sampled_estimator_terms("k2", logp, ref)
    k1_reward, _ = sampled_estimator_terms("k1_reward", logp, ref)
    torch.testing.assert_close(k1_plus.detach(), k1.detach(), **TIGHT)
    for same_gradient in (k2, k1_reward):
        torch.testing.assert_close(
            value_and_grad(k1_plus, logp)[1], value_and_grad(same_gradient, logp)[1], **TIGHT
        )


def test_verl_low_var_kl_clamps_where_ours_does_not() -> None:
    logp = torch.tensor([-25.0, -1.0], dtype=F64, requires_grad=True)
    ref = torch.tensor([-1.0, -25.0], dtype=F64)  # r = ±24: x clamped to ±20, then the value to 10
    verl_value, verl_grad = value_and_grad(verl_kl_penalty_forward(logp, ref, "k3"), logp)
    ours_value, _ = value_and_grad(sampled_estimator_terms("k3", logp, ref)[0], logp)
    torch.testing.assert_close(verl_value, torch.tensor([VERL_KL_CLAMP, VERL_KL_CLAMP], dtype=F64))
    torch.testing.assert_close(verl_grad, torch.zeros(2, dtype=F64), **TIGHT)
    assert ours_value[0] > 1e9 and ours_value[1] == pytest.approx(23.0)


def test_verl_abs_penalty_descends_neither_kl_direction() -> None:
    """verl's ``abs`` has no counterpart here: on one categorical step its expected gradient is neither
    ∇KL(π‖ref) nor ∇KL(ref‖π)."""
    torch.manual_seed(0)
    theta = torch.randn(5, dtype=F64, requires_grad=True)
    log_ref = torch.randn(5, dtype=F64).log_softmax(-1)
    log_pi = theta.log_softmax(-1)
    expected = value_and_grad(log_pi.exp().detach() * (log_pi - log_ref).abs(), theta)[1]
    reverse = value_and_grad(log_pi.exp() * (log_pi - log_ref), theta)[1]
    forward = value_and_grad(log_ref.exp() * (log_ref - log_pi), theta)[1]
    assert (expected - reverse).abs().max() > 1e-3 and (expected - forward).abs().max() > 1e-3


def test_verl_agg_loss_modes_and_our_aggregations() -> None:
    """token-mean = bnpo = dapo; seq-mean-token-mean = grpo × S/S_nonempty (verl leaves empty completions
    out of the mean; TRL counts them as 0); seq-mean-token-sum-norm (factor L) = S × dr_grpo;
    seq-mean-token-sum = L·S/S_nonempty × dr_grpo."""
    batch = random_batch(5)
    loss_mat = batch["logp"] * batch["ref_logp"]
    mask = batch["mask"]
    rows, nonempty = mask.shape[0], int((mask.sum(-1) > 0).sum())
    assert nonempty < rows
    near = {"rtol": 1e-7, "atol": 1e-12}  # verl's 1e-8 in the per-sequence denominator
    for kind in ("bnpo", "dapo"):
        assert_same(
            aggregate_tokens(loss_mat, mask, kind, MAX_COMPLETION),
            verl_agg_loss(loss_mat, mask, "token-mean"),
            batch["logp"],
        )
    grpo = aggregate_tokens(loss_mat, mask, "grpo", MAX_COMPLETION)
    assert_same(
        grpo * rows / nonempty, verl_agg_loss(loss_mat, mask, "seq-mean-token-mean"), batch["logp"], **near
    )
    dr_grpo = aggregate_tokens(loss_mat, mask, "dr_grpo", MAX_COMPLETION)
    norm = verl_agg_loss(loss_mat, mask, "seq-mean-token-sum-norm", loss_scale_factor=MAX_COMPLETION)
    assert_same(dr_grpo * rows, norm, batch["logp"])
    seq_sum = verl_agg_loss(loss_mat, mask, "seq-mean-token-sum")
    assert_same(dr_grpo * MAX_COMPLETION * rows / nonempty, seq_sum, batch["logp"])
    full = mask[:-1]  # without the empty completion, seq-mean-token-mean is TRL's grpo
    grpo_full = aggregate_tokens(loss_mat[:-1], full, "grpo", MAX_COMPLETION)
    assert_same(grpo_full, verl_agg_loss(loss_mat[:-1], full, "seq-mean-token-mean"), batch["logp"], **near)


# ------------------------------------------------------------------------------------------------------
# OpenRLHF
# ------------------------------------------------------------------------------------------------------


def openrlhf_compute_approx_kl(
    log_probs: torch.Tensor, log_probs_base: torch.Tensor, kind: str
) -> torch.Tensor:
    """OpenRLHF's ``compute_approx_kl`` (OpenRLHF/OpenRLHF 3c3be6234e0cb353e76bb8019947db9dfe99fca7,
    openrlhf/models/utils.py): x = logp − logp_base; k1 = x, k2 = x²/2, k3 = e^{−x} − 1 + x; every result
    clamped to ±10. (The peer casts both inputs to float32 first; kept in float64 here.)"""
    x = log_probs - log_probs_base
    if kind == "k2":
        x = x**2 / 2.0
    elif kind == "k3":
        x = (-x).exp() - 1 + x
    return x.clamp(min=-OPENRLHF_CLAMP, max=OPENRLHF_CLAMP)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_openrlhf_approx_kl_matches_our_estimators(kind: str) -> None:
    batch = random_batch(6)
    logp, ref = batch["logp"], batch["ref_logp"]
    theirs = openrlhf_compute_approx_kl(logp, ref, kind)
    assert theirs.detach().abs().max() < OPENRLHF_CLAMP
    assert_same(sampled_estimator_terms(kind, logp, ref)[0], theirs, logp)
