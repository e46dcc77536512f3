"""Per-token regularisers toward a reference policy in policy-gradient RL, and what their gradients descend.

A completion y = (y_1, …, y_T) is sampled from the policy π; π_t = π(· | y_<t) and ref_t = π_ref(· | y_<t) are
the next-token distributions at step t. For the sampled token, r_t = log π_ref(y_t) − log π(y_t) (the
reference is a constant). Each estimator gives, per completion token, a *local surrogate* ℓ_t (carrying
gradient) and a detached *value* v_t, an unbiased estimate of the per-token divergence D_t that ℓ_t descends.

Estimators (``ESTIMATOR_INFO`` holds the same table)::

    name       local surrogate ℓ_t        E[∇ℓ_t | y_<t] (descends)      value v_t         E[v_t | y_<t]
    exact      D(π_t, ref_t), full vocab  ∇D_t, the registry member     D_t (detached)    D_t
    k1         −r                         0 (nothing in expectation)     −r                KL(π_t‖ref_t)
    k2         r²/2                       ∇KL(π_t‖ref_t), reverse        e^r − r − 1       KL(π_t‖ref_t)
    k3         e^r − r − 1                ∇KL(ref_t‖π_t), forward        r·e^r             KL(ref_t‖π_t)
    k3_is      ρ·(e^r − r − 1)            ∇KL(π_t‖ref_t), reverse        e^r − r − 1       KL(π_t‖ref_t)
    k1_reward  sg(−r)·log π(y_t)          ∇KL(π_t‖ref_t), reverse        −r                KL(π_t‖ref_t)

with ρ = exp(log π(y_t) − sg(log π(y_t))) (1 in value; TRL's ``use_bias_correction_kl`` on one update per
batch), sg the stop-gradient. ``k3`` is the k3 loss of TRL's GRPOTrainer and verl's ``low_var_kl``: in value
it estimates the reverse KL(π‖ref), but its gradient descends the *forward* KL(ref‖π).

Gradient forms (:func:`regulariser_surrogate`), for the token sum Σ_t:

* ``local``: Σ_t ℓ_t. Expected gradient Σ_t E[∇D_t], the prefixes held fixed: a partial gradient, not the
  gradient of E Σ_t D_t (for ``k1``: 0).
* ``sequence``: Σ_t [ℓ_t + sg(Σ_{s>t} v_s)·log π(y_t)]. Expected gradient ∇ E_{y~π} Σ_t D_t exactly, for
  every row of the table except ``k1`` (whose local part is 0, so it gives only the second sum of (2) below
  for reverse KL). For the reverse KL (k2, k3_is, k1_reward) that objective is the sequence-level
  KL(π‖π_ref) = E_{y~π} Σ_t KL(π_t‖ref_t) (chain rule of KL); for ``k3`` it is E_{y~π} Σ_t KL(ref_t‖π_t),
  per-token forward KL on the policy's own prefixes (not the sequence-level KL(π_ref‖π), which would need
  y ~ π_ref); for ``exact`` it is E_{y~π} Σ_t D(π_t, ref_t) for any pointwise registry member.

Derivation. (1) One step, a ~ π, ∇r = −∇log π(a), E[∇log π(a)] = 0 and
∇KL(π‖ref) = Σ_a ∇π(a)·log(π(a)/ref(a)) = E[−r ∇log π(a)]:
∇(−r) = ∇log π → 0; ∇(r²/2) = −r ∇log π → ∇KL(π‖ref); ∇(e^r − r − 1) = (1 − e^r) ∇log π →
−Σ_a ref(a) ∇log π(a) = ∇KL(ref‖π); ∇(ρ k3) = (k3 + 1 − e^r) ∇log π = −r ∇log π → ∇KL(π‖ref);
sg(−r) ∇log π → ∇KL(π‖ref). Values: E[−r] = E[e^r − r − 1] = KL(π‖ref) (E[e^r] = 1), E[r e^r] =
Σ_a ref(a) log(ref(a)/π(a)) = KL(ref‖π).
(2) Sequences (score-function identity): D_t depends on θ directly and through the law of the prefix y_<t,

    ∇ E Σ_t D_t = E Σ_t ∇D_t + E Σ_t D_t Σ_{s<t} ∇log π(y_s) = E Σ_t ∇D_t + E Σ_s ∇log π(y_s) Σ_{t>s} D_t,

and the terms t ≤ s are absent because E[∇log π(y_s) | y_<s] = 0. Replacing ∇D_t by ∇ℓ_t and D_t (t > s)
by v_t keeps the expectation, since E[∇ℓ_t | y_<t] = ∇D_t and E[v_t | y_≤s] = E[D_t | y_≤s] (tower rule).
The identity is for the token sum (or any constant normaliser, as ``dr_grpo``); a normaliser that depends
on the sampled lengths (``grpo``, ``bnpo``, ``dapo``) weights the objective by the completion's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from divergence_lab.ground.errors import ConfigError

ESTIMATORS = ("exact", "k1", "k2", "k3", "k3_is", "k1_reward")
SAMPLED_ESTIMATORS = ESTIMATORS[1:]
GRADIENT_FORMS = ("local", "sequence")

REVERSE = "KL(π‖ref), reverse"
FORWARD = "KL(ref‖π), forward"
NOTHING = "nothing in expectation"
REGISTRY = "the chosen registry divergence"


@dataclass(frozen=True)
class EstimatorInfo:
    """What one estimator computes and descends (the module docstring's table).

    ``descends``: the per-token divergence whose gradient E[∇ℓ_t | y_<t] equals; ``surrogate``: ℓ_t;
    ``value``: v_t and the divergence it is unbiased for; ``sequence``: what the ``sequence`` form descends.
    """

    descends: str
    surrogate: str
    value: str
    sequence: str


ESTIMATOR_INFO: dict[str, EstimatorInfo] = {
    "exact": EstimatorInfo(
        REGISTRY, "D(π_t, ref_t) on the full vocabulary", "D_t detached (exact)", "E_{y~π} Σ_t D(π_t, ref_t)"
    ),
    "k1": EstimatorInfo(
        NOTHING, "k1 = −r", "k1 = −r, unbiased for KL(π‖ref)", "only the future part of ∇KL(π‖ref)"
    ),
    "k2": EstimatorInfo(REVERSE, "k2 = r²/2", "k3 = e^r − r − 1, unbiased for KL(π‖ref)", "KL(π‖ref)"),
    "k3": EstimatorInfo(
        FORWARD, "k3 = e^r − r − 1", "r·e^r, unbiased for KL(ref‖π)", "E_{y~π} Σ_t KL(ref_t‖π_t)"
    ),
    "k3_is": EstimatorInfo(
        REVERSE, "ρ·k3, ρ = exp(log π − sg(log π))", "k3 = e^r − r − 1, unbiased for KL(π‖ref)", "KL(π‖ref)"
    ),
    "k1_reward": EstimatorInfo(REVERSE, "sg(k1)·log π(y_t)", "k1 = −r, unbiased for KL(π‖ref)", "KL(π‖ref)"),
}


def sampled_estimator_terms(estimator: str, logp: Tensor, ref_logp: Tensor) -> tuple[Tensor, Tensor]:
    """(ℓ_t with gradient, v_t detached) of a sampled-token estimator from the (S, T) log-probabilities of the
    sampled tokens under π (``logp``) and the reference (``ref_logp``, treated as a constant)."""
    if estimator not in SAMPLED_ESTIMATORS:
        raise ConfigError(
            f"sampled KL estimator must be one of {', '.join(SAMPLED_ESTIMATORS)} (got {estimator!r}); "
            "'exact' is the registry member on the full-vocabulary logits (lm_tokens.token_divergence)"
        )
    r = ref_logp.detach() - logp
    k1 = -r
    if estimator == "k1":
        return k1, k1.detach()
    k3 = torch.expm1(r) - r
    if estimator == "k2":
        return 0.5 * r.square(), k3.detach()
    if estimator == "k3":
        return k3, (r * r.exp()).detach()
    if estimator == "k3_is":
        return torch.exp(logp - logp.detach()) * k3, k3.detach()
    return k1.detach() * logp, k1.detach()


def future_sums(values: Tensor, mask: Tensor) -> Tensor:
    """(S, T) detached Σ_{s>t} m_s v_s: the sum of the later completion tokens' values."""
    masked = values.detach() * mask.to(values.dtype)
    return masked.flip(-1).cumsum(-1).flip(-1) - masked


def regulariser_surrogate(local: Tensor, values: Tensor, logp: Tensor, mask: Tensor, gradient: str) -> Tensor:
    """(S, T) per-token regulariser: ℓ_t (``local``) or ℓ_t + sg(Σ_{s>t} v_s)·log π(y_t) (``sequence``),
    0 on masked tokens. Summed over tokens, its expected gradient is the one the module docstring states."""
    if gradient not in GRADIENT_FORMS:
        raise ConfigError(
            f"regulariser gradient must be one of {', '.join(GRADIENT_FORMS)} (got {gradient!r})"
        )
    total = local if gradient == "local" else local + future_sums(values, mask) * logp
    return torch.where(mask, total, torch.zeros_like(total))
