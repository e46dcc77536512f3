"""The RL regularisers descend what their table says, by exact enumeration in float64 (no sampling).

(a) one categorical step: E_{a~π}[∇ℓ(a)] and E[v(a)] for every sampled estimator; (b) two-token completions
with a prefix-dependent second token and an end token, every sequence enumerated: every estimator in both
gradient forms, and ``exact`` with every pointwise member named below; (c) closed-form optima of a one-token
bandit −E_π[r] + β·D; (d) group advantages, the clipped loss and token aggregation against hand-computed and
brute-force values; (e) refusals.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.optimize import brentq

from divergence_lab import divergences
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.divergence_estimators import (
    ESTIMATOR_INFO,
    ESTIMATORS,
    FORWARD,
    NOTHING,
    REGISTRY,
    REVERSE,
    SAMPLED_ESTIMATORS,
    future_sums,
    regulariser_surrogate,
    sampled_estimator_terms,
)
from divergence_lab.methods.group_advantages import (
    STD_EPS,
    aggregate_tokens,
    clipped_policy_loss,
    group_advantages,
)
from divergence_lab.methods.lm_tokens import NextTokenPredictions, token_divergence

F64 = torch.float64
TIGHT = {"rtol": 1e-10, "atol": 1e-12}
VOCAB = 4
END = VOCAB - 1  # the end token: a completion whose first token is END has one token
POINTWISE_MEMBERS = [
    ("kl", {}),
    ("rkl", {}),
    ("js", {}),
    ("gjs", {"beta": 0.3}),
    ("skl", {}),
    ("srkl", {}),
    ("tv", {}),
    ("hellinger", {}),
    ("chi2", {}),
    ("neyman_chi2", {}),
    ("alpha", {"alpha": 0.5}),
    ("alpha", {"alpha": -0.5}),
    ("alpha", {"alpha": 1.5}),
]


def reverse_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(π‖ref) = Σ π (log π − log ref) per row."""
    log_pi, log_ref = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    return (log_pi.exp() * (log_pi - log_ref)).sum(-1)


def forward_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """KL(ref‖π) = Σ ref (log ref − log π) per row."""
    log_pi, log_ref = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    return (log_ref.exp() * (log_ref - log_pi)).sum(-1)


DIVERGENCE_OF = {REVERSE: reverse_kl, FORWARD: forward_kl}


def grad(value: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The gradient of ``value`` as one flat vector (the graph is kept for a second gradient)."""
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params, retain_graph=True)])


# ------------------------------------------------------------------------------------------------------
# (a) one categorical step
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", SAMPLED_ESTIMATORS)
def test_one_step_expected_gradient_and_value_follow_the_table(estimator: str) -> None:
    torch.manual_seed(0)
    theta = torch.randn(5, dtype=F64, requires_grad=True)
    ref_logits = torch.randn(5, dtype=F64)
    logp = theta.log_softmax(-1)[None, :]  # every action a as one column
    ref_logp = ref_logits.log_softmax(-1)[None, :]
    surrogate, value = sampled_estimator_terms(estimator, logp, ref_logp)
    pi = logp.exp().detach()
    expected_grad = grad((pi * surrogate).sum(), (theta,))
    info = ESTIMATOR_INFO[estimator]
    if info.descends == NOTHING:
        torch.testing.assert_close(expected_grad, torch.zeros_like(expected_grad), **TIGHT)
    else:
        target = DIVERGENCE_OF[info.descends](theta, ref_logits)
        torch.testing.assert_close(expected_grad, grad(target, (theta,)), **TIGHT)
    value_target = forward_kl if "ref‖π" in info.value else reverse_kl
    torch.testing.assert_close((pi * value).sum(), value_target(theta, ref_logits).detach(), **TIGHT)
    assert not value.requires_grad


# ------------------------------------------------------------------------------------------------------
# (b) two-token completions, all enumerated
# ------------------------------------------------------------------------------------------------------


class TwoTokenPolicy:
    """π(y_1) = softmax(a), π(y_2 | y_1) = softmax(B[y_1] + c); a completion that starts with END stops."""

    def __init__(self, seed: int, requires_grad: bool) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.a = torch.randn(VOCAB, dtype=F64, generator=generator).requires_grad_(requires_grad)
        self.b = torch.randn(VOCAB, VOCAB, dtype=F64, generator=generator).requires_grad_(requires_grad)
        self.c = torch.randn(VOCAB, dtype=F64, generator=generator).requires_grad_(requires_grad)

    def params(self) -> tuple[torch.Tensor, ...]:
        return (self.a, self.b, self.c)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(S, 2, V) next-token logits of the enumerated (S, 2) token pairs."""
        first = self.a.expand(tokens.shape[0], VOCAB)
        second = self.b[tokens[:, 0]] + self.c
        return torch.stack([first, second], dim=1)


def all_sequences() -> tuple[torch.Tensor, torch.Tensor]:
    """Every (y_1, y_2) pair and its mask; after END the second token is masked (a dummy that the
    probability weights below sum out, Σ_{y_2} π(y_2 | END) = 1)."""
    tokens = torch.tensor(list(itertools.product(range(VOCAB), repeat=2)))
    mask = torch.stack([torch.ones(len(tokens), dtype=torch.bool), tokens[:, 0] != END], dim=1)
    return tokens, mask


def sequence_terms(policy: TwoTokenPolicy, ref: TwoTokenPolicy):
    tokens, mask = all_sequences()
    logits, ref_logits = policy.logits(tokens), ref.logits(tokens).detach()
    logp = logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    ref_logp = ref_logits.log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    probability = logp.sum(-1).exp()  # Σ over y of these weights is 1
    return tokens, mask, logits, ref_logits, logp, ref_logp, probability


def expected_gradients(per_token_divergence, policy: TwoTokenPolicy, ref: TwoTokenPolicy):
    """(∇ E_y Σ_t D_t, E_y Σ_t ∇D_t with the prefixes held fixed), D_t on the completion tokens only."""
    _, mask, logits, ref_logits, _, _, probability = sequence_terms(policy, ref)
    per_token = per_token_divergence(logits, ref_logits) * mask
    sequence = grad((probability * per_token.sum(-1)).sum(), policy.params())
    local = grad((probability.detach() * per_token.sum(-1)).sum(), policy.params())
    return sequence, local


def surrogate_gradient(surrogate: torch.Tensor, probability: torch.Tensor, policy: TwoTokenPolicy):
    """E_y[∇ Σ_t surrogate_t(y)] by enumeration (the sampling law is not differentiated)."""
    return grad((probability.detach() * surrogate.sum(-1)).sum(), policy.params())


POLICY, REFERENCE = (3, 11)


@pytest.mark.parametrize("gradient", ["local", "sequence"])
@pytest.mark.parametrize("estimator", SAMPLED_ESTIMATORS)
def test_sampled_estimators_over_sequences_descend_what_the_table_says(estimator: str, gradient: str) -> None:
    policy, ref = TwoTokenPolicy(POLICY, True), TwoTokenPolicy(REFERENCE, False)
    _, mask, _, _, logp, ref_logp, probability = sequence_terms(policy, ref)
    local, values = sampled_estimator_terms(estimator, logp, ref_logp)
    surrogate = regulariser_surrogate(local, values, logp, mask, gradient)
    got = surrogate_gradient(surrogate, probability, policy)
    info = ESTIMATOR_INFO[estimator]
    reverse_sequence, reverse_local = expected_gradients(reverse_kl, policy, ref)
    if info.descends == NOTHING:  # k1: 0 locally; the sequence form adds only the future (score) part
        want = torch.zeros_like(got) if gradient == "local" else reverse_sequence - reverse_local
        assert info.sequence == "only the future part of ∇KL(π‖ref)"
    else:
        sequence_grad, local_grad = expected_gradients(DIVERGENCE_OF[info.descends], policy, ref)
        want = local_grad if gradient == "local" else sequence_grad
        assert (local_grad - sequence_grad).abs().max() > 1e-3  # the two forms differ here
    torch.testing.assert_close(got, want, **TIGHT)


def test_reverse_kl_summed_over_tokens_is_the_sequence_kl() -> None:
    """The 'sequence' rows that say KL(π‖ref) mean the sequence-level KL: E_{y~π} Σ_t KL(π_t‖ref_t)."""
    policy, ref = TwoTokenPolicy(POLICY, False), TwoTokenPolicy(REFERENCE, False)
    _, mask, logits, ref_logits, logp, ref_logp, probability = sequence_terms(policy, ref)
    per_token = (reverse_kl(logits, ref_logits) * mask).sum(-1)
    sequence_kl = (probability * ((logp - ref_logp) * mask).sum(-1)).sum()
    torch.testing.assert_close((probability * per_token).sum(), sequence_kl, **TIGHT)


@pytest.mark.parametrize(("name", "params"), POINTWISE_MEMBERS, ids=lambda x: str(x))
def test_exact_sequence_form_is_the_gradient_of_every_pointwise_member(name: str, params: dict) -> None:
    divergence = divergences.build(name, **params)
    policy, ref = TwoTokenPolicy(POLICY, True), TwoTokenPolicy(REFERENCE, False)
    _, mask, logits, ref_logits, logp, _, probability = sequence_terms(policy, ref)
    rows = (logits.reshape(-1, VOCAB), ref_logits.detach().reshape(-1, VOCAB))  # the rlvr method's own path
    per_row = token_divergence(divergence, *map(NextTokenPredictions, rows), mask.reshape(-1))
    local = per_row.view(mask.shape)
    values = local.detach()
    assert ESTIMATOR_INFO["exact"].descends == REGISTRY

    def member(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return divergence(student.reshape(-1, VOCAB), teacher.reshape(-1, VOCAB)).view(student.shape[:-1])

    sequence_grad, local_grad = expected_gradients(member, policy, ref)
    by_form = {}
    for gradient in ("local", "sequence"):
        surrogate = regulariser_surrogate(local, values, logp, mask, gradient)
        by_form[gradient] = surrogate_gradient(surrogate, probability, policy)
    torch.testing.assert_close(by_form["sequence"], sequence_grad, **TIGHT)
    torch.testing.assert_close(by_form["local"], local_grad, **TIGHT)
    assert (by_form["local"] - sequence_grad).abs().max() > 1e-4


def test_future_sums_add_the_later_completion_tokens_only() -> None:
    values = torch.tensor([[1.0, 2.0, 4.0, 8.0], [1.0, 2.0, 4.0, 8.0]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    want = torch.tensor([[6.0, 4.0, 0.0, 0.0], [12.0, 12.0, 8.0, 0.0]], dtype=F64)
    got = future_sums(values, mask)
    torch.testing.assert_close(got, want, **TIGHT)
    assert not got.requires_grad


# ------------------------------------------------------------------------------------------------------
# (c) closed-form optima of a one-token bandit: min_π −E_π[r] + β·D(π, ref)
# ------------------------------------------------------------------------------------------------------

BANDIT_REWARD = torch.tensor([1.0, 0.3, -0.2, 0.6], dtype=F64)  # unnormalised, not group advantages
BANDIT_REF_LOGITS = torch.tensor([0.3, -0.2, 0.5, -0.6], dtype=F64)
BANDIT_BETA = 0.7
OPTIMUM_TOL = 1e-4


def minimise_bandit(divergence) -> torch.Tensor:
    """π minimising −Σ π r + β·D(student = π, teacher = ref) over logits (L-BFGS, float64)."""
    theta = torch.zeros(VOCAB, dtype=F64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [theta],
        lr=1.0,
        max_iter=2000,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        pi = theta.softmax(-1)
        loss = -(pi * BANDIT_REWARD).sum() + BANDIT_BETA * divergence(theta[None], BANDIT_REF_LOGITS[None])[0]
        loss.backward()
        return loss

    optimiser.step(closure)
    return theta.detach().softmax(-1)


def test_reverse_kl_bandit_optimum_is_the_tilted_reference() -> None:
    want = (BANDIT_REF_LOGITS + BANDIT_REWARD / BANDIT_BETA).softmax(-1)
    torch.testing.assert_close(minimise_bandit(divergences.build("rkl")), want, rtol=0, atol=OPTIMUM_TOL)


# D = Σ_k ref_k f(π_k / ref_k) (teacher p = ref, student q = π, u = q/p), f read from the member docstrings:
#   kl    KL(p‖q) = Σ p log(p/q):                              f(u) = −log u,  f′(u) = −1/u
#   rkl   KL(q‖p):                                             f(u) = u log u, f′(u) = 1 + log u
#   js    ½KL(p‖m) + ½KL(q‖m), m = ½(p+q):  f(u) = ½[u log u − (1+u) log((1+u)/2)], f′(u) = ½ log(2u/(1+u))
#   alpha 4/(1−α²)(1 − Σ p^((1−α)/2) q^((1+α)/2)):  f(u) = 4/(1−α²)(1 − u^((1+α)/2)),
#                                                   f′(u) = −2/(1−α) · u^((α−1)/2)
#   chi2  Σ (p−q)²/q:                                          f(u) = (1−u)²/u,  f′(u) = 1 − 1/u²
# Stationarity of −Σ π r + β Σ ref f(π/ref) + λ(Σ π − 1): f′(π_k/ref_k) = (r_k − λ)/β, so π_k = ref_k ·
# (f′)⁻¹((r_k − λ)/β), each inverse defined for c below ``c_max``, and λ solves Σ π_k = 1.
ALPHA = 0.4
F_PRIME_INVERSE = {
    "kl": ({}, lambda c: -1.0 / c, 0.0),
    "rkl": ({}, lambda c: math.exp(c - 1.0), math.inf),
    "js": ({}, lambda c: math.exp(2 * c) / (2.0 - math.exp(2 * c)), 0.5 * math.log(2.0)),
    "alpha": ({"alpha": ALPHA}, lambda c: (-c * (1.0 - ALPHA) / 2.0) ** (2.0 / (ALPHA - 1.0)), 0.0),
    "chi2": ({}, lambda c: (1.0 - c) ** -0.5, 1.0),
}
LAMBDA_SPAN = 50.0  # bracket of λ around max r, in units of β


@pytest.mark.parametrize("name", sorted(F_PRIME_INVERSE))
def test_f_divergence_bandit_optimum_solves_the_stationarity_condition(name: str) -> None:
    params, inverse, c_max = F_PRIME_INVERSE[name]
    ref = BANDIT_REF_LOGITS.softmax(-1).tolist()
    reward = BANDIT_REWARD.tolist()

    def policy(lam: float) -> list[float]:
        return [p * inverse((r - lam) / BANDIT_BETA) for p, r in zip(ref, reward, strict=True)]

    top = max(reward)
    low = top - BANDIT_BETA * min(c_max, LAMBDA_SPAN) + 1e-9
    lam = brentq(lambda x: sum(policy(x)) - 1.0, low, top + BANDIT_BETA * LAMBDA_SPAN, xtol=1e-15)
    want = torch.tensor(policy(lam), dtype=F64)
    got = minimise_bandit(divergences.build(name, **params))
    torch.testing.assert_close(got, want, rtol=0, atol=OPTIMUM_TOL)


# ------------------------------------------------------------------------------------------------------
# (d) group advantages, clipped loss, aggregation
# ------------------------------------------------------------------------------------------------------

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5], [2.0, -1.0, 0.5, 0.5]], dtype=F64)


def test_grpo_advantages_by_hand() -> None:
    third_mean, third_std = 0.5, math.sqrt((1.5**2 + 1.5**2) / 3)
    group = torch.tensor(
        [
            [x / (math.sqrt(1 / 3) + STD_EPS) for x in (0.5, -0.5, -0.5, 0.5)],
            [0.0] * 4,
            [(x - third_mean) / (third_std + STD_EPS) for x in (2.0, -1.0, 0.5, 0.5)],
        ],
        dtype=F64,
    )
    torch.testing.assert_close(group_advantages(REWARDS, "grpo"), group, **TIGHT)
    flat = REWARDS.reshape(-1).tolist()
    mean = sum(flat) / len(flat)
    batch_std = math.sqrt(sum((x - mean) ** 2 for x in flat) / (len(flat) - 1))
    centred = REWARDS - REWARDS.mean(1, keepdim=True)
    torch.testing.assert_close(
        group_advantages(REWARDS, "grpo", "batch"), centred / (batch_std + STD_EPS), **TIGHT
    )
    torch.testing.assert_close(group_advantages(REWARDS, "grpo", "none"), centred, **TIGHT)
    torch.testing.assert_close(group_advantages(REWARDS, "dr_grpo"), centred, **TIGHT)


def test_rloo_is_the_leave_one_out_baseline() -> None:
    rows = REWARDS.tolist()
    want = [[r[i] - (sum(r) - r[i]) / (len(r) - 1) for i in range(len(r))] for r in rows]
    torch.testing.assert_close(group_advantages(REWARDS, "rloo"), torch.tensor(want, dtype=F64), **TIGHT)


def brute_force_pass_at_k(rewards: torch.Tensor, k: int, scale_rewards: str) -> torch.Tensor:
    """Every k-subset enumerated: subset reward = its max; R̃_i = mean over subsets with i; population std."""
    out, subset_rewards = [], []
    for row in rewards.tolist():
        subsets = list(itertools.combinations(range(len(row)), k))
        maxima = {s: max(row[j] for j in s) for s in subsets}
        mean = sum(maxima.values()) / len(subsets)
        std = math.sqrt(sum((m - mean) ** 2 for m in maxima.values()) / len(subsets))
        own = [
            sum(m for s, m in maxima.items() if i in s) / math.comb(len(row) - 1, k - 1)
            for i in range(len(row))
        ]
        out.append((own, mean, std))
        subset_rewards.extend(maxima.values())
    batch_mean = sum(subset_rewards) / len(subset_rewards)
    batch_std = math.sqrt(sum((m - batch_mean) ** 2 for m in subset_rewards) / len(subset_rewards))
    rows = []
    for own, mean, std in out:
        scale = {"group": std + STD_EPS, "batch": batch_std + STD_EPS, "none": 1.0}[scale_rewards]
        rows.append([(x - mean) / scale for x in own])
    return torch.tensor(rows, dtype=F64)


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_pass_at_k_advantage_equals_the_enumeration_of_all_subsets(scale_rewards: str) -> None:
    generator = torch.Generator().manual_seed(5)
    rewards = torch.randn(3, 6, dtype=F64, generator=generator).round(decimals=1)
    rewards[0, 2] = rewards[0, 4]  # a tie
    rewards[2] = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    for k in range(1, 7):
        got = group_advantages(rewards, "pass_at_k", scale_rewards, k=k)
        # atol: a group whose every subset has the same maximum has σ = 0, and the enumeration's own
        # rounding (≈1e-16) is then divided by ε = 1e-4
        want = brute_force_pass_at_k(rewards, k, scale_rewards)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9)


def test_pass_at_k_binary_rewards_match_the_papers_closed_form() -> None:
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]], dtype=F64)
    group, k, negatives = 8, 3, 6
    mean = 1 - math.comb(negatives, k) / math.comb(group, k)
    std = math.sqrt(mean * (1 - mean))
    positive = (1 - mean) / (std + STD_EPS)
    negative = (1 - mean - math.comb(negatives - 1, k - 1) / math.comb(group - 1, k - 1)) / (std + STD_EPS)
    want = rewards * positive + (1 - rewards) * negative
    torch.testing.assert_close(group_advantages(rewards, "pass_at_k", k=k), want, **TIGHT)


def test_clipped_policy_loss_by_hand() -> None:
    old = torch.zeros(2, 3, dtype=F64)
    log_ratio = torch.tensor([[0.1, 0.5, -0.5], [0.1, 0.5, -0.5]], dtype=F64)
    logp = (old + log_ratio).requires_grad_(True)
    advantages = torch.tensor([2.0, -1.0], dtype=F64)
    loss = clipped_policy_loss(logp, old, advantages, epsilon_low=0.2, epsilon_high=0.28)
    rho = log_ratio.exp()
    # A > 0: min(ρA, clip·A) clips only above 1.28; A < 0: the min clips only below 0.8
    want = torch.stack([-2.0 * torch.minimum(rho[0], torch.tensor(1.28, dtype=F64)), rho[1].clamp(min=0.8)])
    torch.testing.assert_close(loss, want, **TIGHT)
    (grad_logp,) = torch.autograd.grad(loss.sum(), logp)
    want_grad = torch.tensor(
        [[-2.0 * rho[0, 0], 0.0, -2.0 * rho[0, 2]], [rho[1, 0], rho[1, 1], 0.0]], dtype=F64
    )
    torch.testing.assert_close(grad_logp, want_grad, **TIGHT)
    on_policy = clipped_policy_loss(logp, logp.detach(), advantages, 0.2, 0.28)
    (grad_on,) = torch.autograd.grad(on_policy.sum(), logp)
    torch.testing.assert_close(grad_on, -advantages[:, None].expand(2, 3), **TIGHT)


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0]], dtype=F64)
TOKEN_MASK = torch.tensor([[True, True, False, False], [True, True, True, True], [False] * 4])


def test_aggregations_by_hand() -> None:
    want = {
        "grpo": (1.5 + 25.0 + 0.0) / 3,
        "bnpo": (3.0 + 100.0) / 6,
        "dapo": (3.0 + 100.0) / 6,
        "dr_grpo": (3.0 + 100.0) / (3 * 8),
    }
    for kind, value in want.items():
        got = aggregate_tokens(PER_TOKEN, TOKEN_MASK, kind, max_completion_length=8)
        torch.testing.assert_close(got, torch.tensor(value, dtype=F64), **TIGHT)


# ------------------------------------------------------------------------------------------------------
# (e) refusals
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: group_advantages(torch.ones(3, 1, dtype=F64), "grpo"),
        lambda: group_advantages(torch.ones(3, 1, dtype=F64), "rloo"),
        lambda: group_advantages(torch.ones(2, 4, dtype=F64), "pass_at_k", k=5),
        lambda: group_advantages(torch.ones(2, 4, dtype=F64), "pass_at_k", k=0),
        lambda: group_advantages(torch.ones(2, 4, dtype=F64), "ppo"),
        lambda: group_advantages(torch.ones(2, 4, dtype=F64), "grpo", scale_rewards="global"),
        lambda: group_advantages(torch.ones(8, dtype=F64), "grpo"),
        lambda: aggregate_tokens(PER_TOKEN, TOKEN_MASK, "seq-mean-token-sum", 8),
        lambda: aggregate_tokens(PER_TOKEN, TOKEN_MASK, "dr_grpo", 3),
        lambda: clipped_policy_loss(PER_TOKEN, PER_TOKEN, torch.ones(3, dtype=F64), -0.1, 0.2),
        lambda: sampled_estimator_terms("exact", PER_TOKEN, PER_TOKEN),
        lambda: sampled_estimator_terms("k4", PER_TOKEN, PER_TOKEN),
        lambda: regulariser_surrogate(PER_TOKEN, PER_TOKEN, PER_TOKEN, TOKEN_MASK, "global"),
    ],
)
def test_bad_settings_are_refused(call) -> None:
    with pytest.raises(ConfigError):
        call()


def test_every_estimator_has_a_table_row() -> None:
    assert set(ESTIMATOR_INFO) == set(ESTIMATORS)
    assert {info.descends for info in ESTIMATOR_INFO.values()} == {REVERSE, FORWARD, NOTHING, REGISTRY}
