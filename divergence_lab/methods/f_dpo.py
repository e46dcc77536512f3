"""The f-DPO loss (Wang et al. 2023, "Beyond Reverse KL: Generalizing Direct Preference Optimization with
Diverse Divergence Constraints", arXiv 2309.16240): DPO with the reverse KL regulariser replaced by an
f-divergence ``D_f(π ‖ π_ref) = E_{y~π_ref} f(π(y|x) / π_ref(y|x))``.

Maximising ``E_π[r] − β D_f(π ‖ π_ref)`` gives, where ``f′`` is invertible and ``0`` is outside its
domain (the paper's KKT argument, which removes the partition function), the implicit reward

    r(x, y) = β f′(π(y|x) / π_ref(y|x)) + const(x),

and the Bradley-Terry likelihood of a preferred ``y_w`` over ``y_l`` gives the loss per pair

    ℓ = −log σ(β f′(e^{u_w}) − β f′(e^{u_l})),   u = log π(y|x) − log π_ref(y|x)

(``u``: the sequence log-ratio, the sum over the completion's tokens, its eos included).

f′ as a function of ``u`` (:data:`F_DPO_DIVERGENCES`). Adding ``c·(t − 1)`` to ``f`` leaves ``D_f``
unchanged (``E_{π_ref}[π/π_ref − 1] = 0``), so each ``f`` is taken in the form with ``f′(1) = 0``: the
reward is 0 where the policy equals the reference, and the constants cancel in ``ℓ``:

* ``rkl`` — reverse KL(π ‖ π_ref): ``f(t) = t log t``, ``f′(t) = log t + 1`` → ``u`` (plain DPO);
* ``kl`` — forward KL(π_ref ‖ π): ``f(t) = −log t``, ``f′(t) = −1/t`` → ``1 − e^{−u}``;
* ``js`` — ``f(t) = t log t − (1 + t) log((1 + t)/2)``, ``f′(t) = log(2t / (1 + t))`` →
  ``log 2 − log(1 + e^{−u})``; this ``f`` is twice the registry ``js`` generator, so ``β`` weighs
  ``2·JS(π, π_ref)``;
* ``alpha`` — the paper's α-divergence, ``f(t) = (t^{1−α} − (1 − α) t − α) / (α(α − 1))``, α ∈ [0, 1],
  ``f′(t) = (1 − t^{−α}) / α`` → ``(1 − e^{−αu}) / α``; α → 0 is ``rkl``'s ``u``, α = 1 is ``kl``'s.

The names and directions are the registry's with the policy as the student and the reference as the target
(:mod:`divergence_lab.divergences.named`: ``kl`` = KL(target ‖ student), ``rkl`` = KL(student ‖ target)).
Other registry members (``tv``, ``hellinger``, ``chi2`` ...) lack the property (``tv``'s ``f′`` is a
step, not invertible; ``chi2``'s ``f′(t) = 2(t − 1)`` is finite at 0) and are refused
(:func:`check_f_dpo_divergence`).

α conventions (``alpha_convention``), all mapped to the paper's α (:func:`paper_alpha`):

* ``paper`` — α as above (α → 0 reverse KL, α = 1 forward KL);
* ``trl`` — TRL ``DPOConfig.f_alpha_divergence_coef`` since its DPO refactor (huggingface/trl
  e3b7897c873f94c26bf1a661df19e428239be114, 2026-02-19), whose score is ``(t^{α−1} − 1)/(α − 1)``:
  ``α_paper = 1 − α_TRL`` (α_TRL = 1 reverse KL, 0 forward KL). Before it (huggingface/trl
  8c232f64b5bb00ef854bff157f6857241d415fe0) TRL's score was ``(1 − t^{−α})/α``, so α_TRL was α_paper, and
  its default was 1.0 (forward KL); the default is now 0.5, the one value both readings share;
* ``registry`` — Amari's α of the registry member ``alpha`` (:mod:`divergence_lab.divergences.parametric`),
  ``D_α(p ‖ q) = 4/(1 − a²)·(1 − Σ p^{(1−a)/2} q^{(1+a)/2})``: with ``p = π_ref`` (target) and ``q = π``,
  the paper's ``D_f(π ‖ π_ref)`` at α equals it exactly at ``a = 1 − 2α``, so ``α_paper = (1 − a)/2``
  (a = 1 reverse KL, −1 forward KL).

Only torch here; :mod:`divergence_lab.methods.dpo` builds the pairs and the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from divergence_lab.ground.errors import ConfigError

LOG2 = math.log(2.0)
#: Exponents are clamped at this before ``exp`` (as TRL does for float32): ``e^{80}/α`` stays finite in
#: float32 for α ≥ e^{−8}; beyond it a reward saturates (zero gradient), far past where σ saturates.
EXP_ARGUMENT_MAX = 80.0
ALPHA_CONVENTIONS = ("registry", "paper", "trl")
PAPER_ALPHA_RANGE = (0.0, 1.0)  # the α-divergences of f-DPO, reverse KL to forward KL


def _reverse_kl(u: Tensor, alpha: float | None) -> Tensor:
    return u


def _forward_kl(u: Tensor, alpha: float | None) -> Tensor:
    return -torch.expm1((-u).clamp_max(EXP_ARGUMENT_MAX))


def _jensen_shannon(u: Tensor, alpha: float | None) -> Tensor:
    return LOG2 - F.softplus(-u)


def _alpha(u: Tensor, alpha: float | None) -> Tensor:
    if alpha is None:
        raise ValueError("the alpha f-DPO reward needs alpha (the paper's α)")
    if alpha == 0.0:
        return u
    return -torch.expm1((-alpha * u).clamp_max(EXP_ARGUMENT_MAX)) / alpha


#: registry name -> f′(e^u) as a function of the log-ratio u (and the paper's α), normalised to f′(1) = 0
F_DPO_DIVERGENCES: dict[str, Callable[[Tensor, float | None], Tensor]] = {
    "rkl": _reverse_kl,
    "kl": _forward_kl,
    "js": _jensen_shannon,
    "alpha": _alpha,
}


def check_f_dpo_divergence(name: str) -> None:
    """Refuse, in one line, a registry divergence without the f-DPO property."""
    if name not in F_DPO_DIVERGENCES:
        raise ConfigError(
            f"divergence={name} has no f-DPO implicit reward (its f′ must be invertible with 0 outside its "
            f"domain); method=dpo takes {', '.join(F_DPO_DIVERGENCES)}"
        )


def paper_alpha(
    alpha: float, convention: str, alpha_key: str = "alpha", convention_key: str = "alpha_convention"
) -> float:
    """The paper's α of ``alpha`` read in ``convention`` (``registry``: (1 − a)/2; ``paper``: α;
    ``trl``: 1 − α_TRL), refused in one line outside [0, 1]; the refusals name the two settings by
    ``alpha_key`` and ``convention_key``."""
    if convention not in ALPHA_CONVENTIONS:
        raise ConfigError(
            f"{convention_key} must be one of {', '.join(ALPHA_CONVENTIONS)} (got {convention!r})"
        )
    converted = {"registry": 0.5 * (1.0 - alpha), "paper": alpha, "trl": 1.0 - alpha}[convention]
    low, high = PAPER_ALPHA_RANGE
    if not low <= converted <= high:
        allowed = {"registry": "[-1, 1]", "paper": "[0, 1]", "trl": "[0, 1]"}[convention]
        raise ConfigError(
            f"{alpha_key}={alpha} read as {convention_key}={convention} must be in {allowed} (the f-DPO "
            "α-divergences run from reverse KL to forward KL)"
        )
    return converted


def implicit_reward(
    u: Tensor, divergence: str, alpha: float | None = None, alpha_convention: str = "paper"
) -> Tensor:
    """``f′(e^u)`` (normalised to 0 at u = 0) of the registry ``divergence`` for sequence log-ratios ``u``;
    ``alpha`` (read in ``alpha_convention``) for ``divergence="alpha"`` only. Multiply by β for the reward."""
    check_f_dpo_divergence(divergence)
    converted = paper_alpha(alpha, alpha_convention) if divergence == "alpha" else None
    return F_DPO_DIVERGENCES[divergence](u, converted)


def f_dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    divergence: str,
    alpha: float | None = None,
    alpha_convention: str = "paper",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per pair: ``ℓ = −log σ(r_w − r_l)`` with ``r = β f′(e^u)``, ``u = log π − log π_ref`` of the chosen
    (w) and rejected (l) completions (sequence log-probabilities, shape (P,)). Returns ``(ℓ, r_w, r_l)``,
    the rewards detached. ``alpha``: for ``divergence="alpha"``, in ``alpha_convention`` (``paper``,
    ``trl`` or ``registry``; see the module docstring)."""
    chosen = beta * implicit_reward(policy_chosen - ref_chosen, divergence, alpha, alpha_convention)
    rejected = beta * implicit_reward(policy_rejected - ref_rejected, divergence, alpha, alpha_convention)
    return -F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach()
