"""Group advantages, the clipped policy loss and token aggregation of group-based policy-gradient RL.

Each prompt p gets G sampled completions with scalar rewards ``rewards[p, i]`` (a (P, G) tensor); the
advantage of completion i is computed from its group only (``scale_rewards="batch"`` aside).

Advantages (``kind``), with r̄_p = (1/G) Σ_j r_pj:

* ``grpo``: A_pi = (r_pi − r̄_p) / (σ + ε). σ follows ``scale_rewards`` as TRL's GRPOTrainer
  (huggingface/trl f2cd57710ae345ea6428ae95363267fcf38a3dc8, trl/trainer/grpo_trainer.py,
  ``sum_then_normalize``): ``group`` — the Bessel-corrected std of the group, √(Σ_j (r_pj − r̄_p)²/(G−1));
  ``batch`` — the Bessel-corrected std of all P·G rewards (the mean stays the group's); ``none`` — no
  division (then A = r − r̄, the Dr. GRPO advantage). ε = 1e-4 (:data:`STD_EPS`, TRL's constant).
* ``dr_grpo``: A_pi = r_pi − r̄_p (Dr. GRPO; never scaled).
* ``rloo``: A_pi = r_pi − (1/(G−1)) Σ_{j≠i} r_pj = G/(G−1) · (r_pi − r̄_p) (leave-one-out; never scaled).
* ``pass_at_k``: the analytic Pass@k advantage (Chen et al. 2025, arXiv 2508.10751), written for any real
  rewards. The reward of a k-subset I of the group is max_{j∈I} r_pj; the group mean R̄ and variance σ² are
  those of that reward over all C(G, k) subsets; completion i gets the mean reward R̃_i of the C(G−1, k−1)
  subsets that contain it, and A_pi = (R̃_i − R̄)/(σ + ε). With the group sorted ascending, r_(1) ≤ … ≤ r_(G),
  r_(j) is the maximum of C(j−1, k−1) subsets (ties broken by position, which leaves every maximum
  unchanged), so

      R̄ = Σ_j C(j−1, k−1) r_(j) / C(G, k),   σ² = Σ_j C(j−1, k−1) (r_(j) − R̄)² / C(G, k),
      R̃_(j) = [C(j−1, k−1) r_(j) + Σ_{m>j} C(m−2, k−2) r_(m)] / C(G−1, k−1)

  (the subsets containing (j) whose maximum is (m) > (j) choose their other k−2 members below m). For 0/1
  rewards with N_neg failures this is the paper's closed form: R̄ = 1 − C(N_neg, k)/C(G, k),
  σ = √(R̄(1 − R̄)), A_pos = (1 − R̄)/σ, A_neg = (1 − R̄ − C(N_neg−1, k−1)/C(G−1, k−1))/σ.
  ``scale_rewards``: ``group`` uses σ above (the population std over subsets, not Bessel-corrected, so
  k = 1 differs from ``grpo`` by √((G−1)/G)); ``batch`` the population std of the subset rewards of all
  groups together, √((1/P) Σ_p Σ_j C(j−1, k−1)/C(G, k) · (r_p(j) − mean_p R̄_p)²); ``none`` no division.

Clipped policy loss (PPO/GRPO, per token): ρ_t = exp(log π(y_t) − log π_old(y_t)) with π_old detached,
loss_t = −min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A). With one update per batch π_old = π.detach(), so
ρ = 1 in value and the gradient is −A ∇log π(y_t).

Token aggregation of a per-token loss ℓ (S, T) with completion mask m (``loss_type`` of TRL's GRPOTrainer,
same commit, one process and no gradient accumulation), L = ``max_completion_length``:

* ``grpo``: (1/S) Σ_s [Σ_t m ℓ / max(Σ_t m, 1)] (per-sequence mean, then mean over sequences);
* ``bnpo``: Σ m ℓ / max(Σ m, 1) (mean over the batch's active tokens);
* ``dr_grpo``: Σ m ℓ / (S · L) (a constant normaliser);
* ``dapo``: Σ m ℓ / max(N, 1) with N the active tokens of the whole generation batch across processes
  and accumulation steps; on one process and one step N = Σ m, so ``dapo`` equals ``bnpo`` here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from divergence_lab.ground.errors import ConfigError

ADVANTAGES = ("grpo", "dr_grpo", "rloo", "pass_at_k")
SCALE_REWARDS = ("group", "batch", "none")
AGGREGATIONS = ("grpo", "dr_grpo", "dapo", "bnpo")
STD_EPS = 1e-4  # TRL GRPOTrainer's constant added to the reward std
COUNT_DTYPE = torch.float64  # binomial weights of pass@k: C(64, 32) ≈ 1.8e18 needs float64 precision
MIN_GROUP_FOR_BASELINE = 2  # grpo (Bessel std) and rloo (leave-one-out mean) need two completions a group


def _check_rewards(rewards: Tensor, kind: str, scale_rewards: str, k: int) -> None:
    if kind not in ADVANTAGES:
        raise ConfigError(f"advantage kind must be one of {', '.join(ADVANTAGES)} (got {kind!r})")
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)} (got {scale_rewards!r})")
    if rewards.dim() != 2 or not rewards.is_floating_point() or rewards.numel() == 0:
        raise ConfigError(
            f"rewards must be a non-empty floating (prompts, group) tensor (got {rewards.shape})"
        )
    group = rewards.shape[1]
    if kind in ("grpo", "rloo") and group < MIN_GROUP_FOR_BASELINE:
        raise ConfigError(f"advantage {kind!r} needs at least {MIN_GROUP_FOR_BASELINE} completions a prompt")
    if kind == "grpo" and scale_rewards == "batch" and rewards.numel() < MIN_GROUP_FOR_BASELINE:
        raise ConfigError("scale_rewards='batch' needs at least two rewards in the batch")
    if kind == "pass_at_k" and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= group):
        raise ConfigError(f"pass@k advantage needs an integer k in [1, group size {group}] (got {k!r})")


def group_advantages(
    rewards: Tensor, kind: str, scale_rewards: str = "group", k: int = 1, eps: float = STD_EPS
) -> Tensor:
    """(P, G) advantages of (P, G) rewards, as defined in the module docstring; ``k`` is read by
    ``pass_at_k`` only, ``scale_rewards`` by ``grpo`` and ``pass_at_k`` (``dr_grpo`` and ``rloo`` are
    unscaled by definition)."""
    _check_rewards(rewards, kind, scale_rewards, k)
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if kind == "dr_grpo":
        return centred
    if kind == "rloo":
        group = rewards.shape[1]
        return centred * (group / (group - 1))
    if kind == "pass_at_k":
        return _pass_at_k(rewards, k, scale_rewards, eps)
    if scale_rewards == "none":
        return centred
    std = rewards.std(dim=1, keepdim=True) if scale_rewards == "group" else rewards.std()
    return centred / (std + eps)


def _pass_at_k(rewards: Tensor, k: int, scale_rewards: str, eps: float) -> Tensor:
    """Analytic Pass@k advantage over all k-subsets of each group (module docstring)."""
    group = rewards.shape[1]
    ordered, order = rewards.to(COUNT_DTYPE).sort(dim=1)
    position = torch.arange(group, dtype=COUNT_DTYPE, device=rewards.device)  # j − 1 for r_(j)
    as_max = _binomial(position, k - 1) / math.comb(group, k)  # share of the subsets whose maximum is r_(j)
    mean = (as_max * ordered).sum(dim=1, keepdim=True)
    # Σ_{m>j} C(m−2, k−2) r_(m): a reversed cumulative sum, excluding m = j.
    above = _binomial(position - 1, k - 2) * ordered
    tail = above.flip(1).cumsum(1).flip(1) - above
    own = _binomial(position, k - 1) * ordered
    sorted_reward = (own + tail) / math.comb(group - 1, k - 1)
    response_reward = torch.empty_like(sorted_reward).scatter_(1, order, sorted_reward)
    centred = response_reward - mean
    if scale_rewards == "none":
        return centred.to(rewards.dtype)
    centre = mean if scale_rewards == "group" else mean.mean()
    variance = (as_max * (ordered - centre).square()).sum(dim=1, keepdim=True)
    if scale_rewards == "batch":
        variance = variance.mean()
    return (centred / (variance.sqrt() + eps)).to(rewards.dtype)


def _binomial(n: Tensor, r: int) -> Tensor:
    """C(n, r) elementwise for integer-valued n ≥ −1 and r ≥ −1; 0 where n < r or r < 0, and C(−1, −1) = 1
    (the k = 1 convention of the tail sum: no other member is chosen)."""
    if r < 0:
        return (n == r).to(n.dtype)
    out = torch.ones_like(n)
    for i in range(r):
        out = out * (n - i) / (i + 1)
    return torch.where(n >= r, out, torch.zeros_like(n))


def clipped_policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, epsilon_low: float, epsilon_high: float
) -> Tensor:
    """(S, T) per-token loss −min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high) A), ρ = exp(logp − old_logp), with
    ``old_logp`` detached and the (S,) advantages broadcast over tokens."""
    if epsilon_low < 0.0 or epsilon_high < 0.0:
        raise ConfigError(f"clip ranges must be >= 0 (got {epsilon_low=}, {epsilon_high=})")
    ratio = torch.exp(logp - old_logp.detach())
    advantage = advantages.detach()[:, None]
    clipped = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
    return -torch.minimum(ratio * advantage, clipped * advantage)


def aggregate_tokens(per_token: Tensor, mask: Tensor, kind: str, max_completion_length: int) -> Tensor:
    """Scalar loss from an (S, T) per-token loss and its (S, T) bool completion mask (module docstring)."""
    if kind not in AGGREGATIONS:
        raise ConfigError(f"loss aggregation must be one of {', '.join(AGGREGATIONS)} (got {kind!r})")
    if isinstance(max_completion_length, bool) or not isinstance(max_completion_length, int):
        raise ConfigError(f"max_completion_length must be an integer (got {max_completion_length!r})")
    longest = int(mask.sum(dim=-1).max()) if mask.numel() else 0  # the rows may also hold prompt positions
    if max_completion_length < longest:
        raise ConfigError(
            f"max_completion_length ({max_completion_length}) is below the longest completion "
            f"({longest} tokens)"
        )
    weights = mask.to(per_token.dtype)
    masked = per_token * weights
    if kind == "grpo":
        return (masked.sum(-1) / weights.sum(-1).clamp(min=1.0)).mean()
    if kind == "dr_grpo":
        return masked.sum() / (per_token.shape[0] * max_completion_length)
    return masked.sum() / weights.sum().clamp(min=1.0)
