"""``method=rlvr``: RL with verifiable rewards (GRPO-style) and a divergence to a reference as the
regulariser; ``method=kdrl`` is the same module with the teacher as the reference (``conf/method/kdrl.yaml``).

One training step on ``P`` prompts (a batch of the data's training rows):

1. the policy π samples ``G = group_size`` completions of each prompt
   (:mod:`~divergence_lab.methods.rollouts`, seeded by the run's seed and the step) and the verifier
   scores them: rewards ``r`` (P, G);
2. group advantages ``A`` (:func:`~divergence_lab.methods.group_advantages.group_advantages`: ``grpo`` ÷ the
   std of ``scale_rewards``, ``dr_grpo`` / ``rloo`` without, ``pass_at_k``);
3. per completion token ``t`` of sample ``i``, the loss term

       ℓ_{i,t} = w · pg_{i,t} + β · m_i · R_{i,t} − c · H(π_t)

   with ``pg`` the clipped policy-gradient term
   (:func:`~divergence_lab.methods.group_advantages.clipped_policy_loss`,
   ratio 1 unless ``updates_per_batch > 1``), ``w = reward_weight``, ``R`` the regulariser surrogate, ``m_i``
   the mask of ``regulariser.apply_to`` (all samples, the incorrect ones, the groups with no correct sample,
   the groups with every sample correct) and ``c = entropy_coef``;
4. the terms are aggregated over tokens as TRL's ``loss_type`` (``aggregation``:
   :func:`~divergence_lab.methods.group_advantages.aggregate_tokens`) and the policy takes
   ``updates_per_batch`` optimiser steps on them (PPO-style: the ratio to the sampling policy is clipped).

The regulariser (:mod:`~divergence_lab.methods.divergence_estimators`) is β·D(π‖reference) per token:

* ``estimator: exact`` — ``D`` is the ``divergence`` group's registry member between the policy's and the
  reference's next-token distributions over the whole vocabulary (``D(student=π, teacher=reference)``: the
  registry's ``kl`` is KL(reference‖π), forward and mass-covering; ``rkl`` is KL(π‖reference), reverse),
  through the logits or, at large vocabularies, the fused linear path;
* ``k1 | k2 | k3 | k3_is | k1_reward`` — the sampled-token estimators of the RLHF frameworks, for comparison;
  each descends the divergence its table in ``divergence_estimators`` names (k3 as a loss descends the
  *forward* KL, although the frameworks call it reverse).

``gradient: sequence`` adds the detached future-divergence score term, so that the exact estimator's
gradient is that of E_{y~π} Σ_t D_t; ``prefixes: reference`` takes ``D`` on the reference's own samples
(the RLVR-divergence paper's form; exact and local only). Every log line and report names the direction in
words (:func:`regulariser_description`).

Evaluation (``val``/``test``): the NLL of the data's completions, the sampled answer metrics of ``lm_kd``,
the exact answer metrics (teacher-forced correct answers: ``answer_prob``, ``pass@k_exact``,
``answer_coverage``, ``correct_entropy``), the reward and the exact per-token KL(π‖ref), KL(ref‖π) and
entropy on the policy's own samples (``kl_reverse``, ``kl_forward``, per sequence ``*_seq``), and with
``mixed`` data the NLL of the held-out completions of each task (forgetting).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from transformers import PreTrainedModel

from divergence_lab import divergences
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.progress import StageProgress, mean_of
from divergence_lab.ground.targets import instantiate_target
from divergence_lab.methods.answer_probabilities import (
    SYNTHETIC_TASKS,
    answer_log_probabilities,
    exact_answer_metrics,
    heldout_nll,
    policy_sample_divergences,
)
from divergence_lab.methods.divergence_estimators import (
    ESTIMATOR_INFO,
    regulariser_surrogate,
    sampled_estimator_terms,
)
from divergence_lab.methods.frozen_models import FrozenModels
from divergence_lab.methods.group_advantages import aggregate_tokens, clipped_policy_loss, group_advantages
from divergence_lab.methods.initial_policy import (
    frozen_reference,
    initial_policy,
    policy_stages,
)
from divergence_lab.methods.lm_generation import Sampling, batch_prompts
from divergence_lab.methods.lm_kd import (
    CausalLMModule,
    answer_evaluations,
    sampling_of,
    uses_fused_linear,
)
from divergence_lab.methods.lm_kd import (
    check_settings as check_evaluation_settings,
)
from divergence_lab.methods.lm_tokens import (
    NextTokenPredictions,
    detached,
    labelled_log_probs,
    next_token_predictions,
    shifted_targets,
    token_divergence,
    token_entropy,
)
from divergence_lab.methods.rollouts import Rollout, Verifier, sample_rollout, step_seed
from divergence_lab.methods.stages import Stage, StageOutput

log = logging.getLogger(__name__)

POLICY_STREAM, REFERENCE_STREAM, EVALUATION_STREAM = 0, 1, 2  # separate seeds of the three kinds of draws
DIRECTION_WORDS = {
    "kl": "KL(reference ‖ policy), forward, mass-covering",
    "rkl": "KL(policy ‖ reference), reverse, mode-seeking",
}
RL_PROGRESS = "rl"  # the progress lines' stage: [rl] step 25/150  reward …  kl_reverse …
PROGRESS_VALUES = ("reward", "kl_reverse", "divergence")  # shown on them, means over the steps since the last
CORRECT_REWARD = 1.0  # the reward of a correct completion: apply_to and the groups' solved / failed status


def regulariser_description(divergence_name: str, regulariser: DictConfig, reference: str) -> str:
    """One line that says which divergence the regulariser descends, in words."""
    beta = regulariser.beta
    if reference == "none" or regulariser.apply_to == "none":
        return "regulariser: none (apply_to none or no reference)"
    if beta == 0 and regulariser.get("beta_final") in (None, 0):
        return "regulariser: none (beta = 0)"
    estimator = regulariser.estimator
    if estimator == "exact":
        what = DIRECTION_WORDS.get(divergence_name, f"{divergence_name}(policy, reference) (registry member)")
        what = f"{what}, exact over the vocabulary"
    else:
        what = f"{estimator}: descends {ESTIMATOR_INFO[estimator].descends}"
    return (
        f"regulariser: beta={beta} x {what}; gradient {regulariser.gradient}, on the "
        f"{regulariser.prefixes}'s samples, applied to {regulariser.apply_to}; reference: {reference}"
    )


def scheduled_beta(regulariser: DictConfig, progress: float) -> float:
    """β at ``progress`` ∈ [0, 1] of the run: constant, or from ``beta`` to ``beta_final`` linearly
    (β₀ + (β₁ − β₀)·s) or on a half cosine (β₁ + (β₀ − β₁)(1 + cos πs)/2)."""
    start, end = float(regulariser.beta), regulariser.get("beta_final")
    if regulariser.beta_schedule == "constant" or end is None:
        return start
    if regulariser.beta_schedule == "linear":
        return start + (float(end) - start) * progress
    return float(end) + (start - float(end)) * (1.0 + math.cos(math.pi * progress)) / 2.0


def regularised_samples(rewards: Tensor, apply_to: str) -> Tensor:
    """The (P·G,) float mask of the samples the regulariser applies to (``apply_to``)."""
    correct = rewards >= CORRECT_REWARD
    if apply_to in ("all", "none"):
        chosen = torch.full_like(correct, apply_to == "all")
    elif apply_to == "incorrect":
        chosen = ~correct
    elif apply_to == "failed_groups":
        chosen = (~correct.any(dim=1, keepdim=True)).expand_as(correct)
    else:
        chosen = correct.all(dim=1, keepdim=True).expand_as(correct)
    return chosen.reshape(-1).float()


def per_token(values: Tensor, sequences: int) -> Tensor:
    """Flattened (S·T,) row values as (S, T)."""
    return values.reshape(sequences, -1)


def token_mask(batch: dict[str, Tensor]) -> Tensor:
    """(S, T) mask of the labelled next-token rows of ``batch`` (the completion tokens and their eos)."""
    return per_token(shifted_targets(batch["labels"])[1], batch["labels"].shape[0])


def forgetting(
    model: nn.Module, datamodule: Any, split: str, batch_size: int, device: Any
) -> dict[str, float]:
    """On ``mixed`` synthetic data, ``nll_<task>``: the mean NLL of ``split``'s held-out completions of each
    task, which rises where RL on one task makes the policy forget the other (nothing on other data)."""
    if getattr(datamodule, "task", None) != "mixed":
        return {}
    return {
        f"nll_{task}": heldout_nll(model, datamodule, split, task, batch_size, device)
        for task in SYNTHETIC_TASKS
    }


class PolicyOptimisationModule(FrozenModels, CausalLMModule):
    """The ``rlvr`` / ``kdrl`` policy (see the module docstring); ``reference`` is frozen
    (:class:`~divergence_lab.methods.frozen_models.FrozenModels`; None: no regulariser); ``prompts`` maps
    the training prompts' token ids to their :class:`EvalPrompt`."""

    frozen_names = ("reference",)

    def __init__(
        self,
        model: PreTrainedModel,
        reference: PreTrainedModel | None,
        divergence: divergences.Divergence,
        divergence_name: str,
        settings: DictConfig,
        prompts: dict[tuple[int, ...], Any],
        tokenizer: Any,
        verifier: Verifier,
        sampling: Sampling,
        special_tokens: tuple[int, int],
        seed: int,
        max_epochs: int,
        evaluation: dict[str, Any],
        fused: bool = False,
    ) -> None:
        super().__init__(model, dict(settings.optimizer), max_epochs, evaluation, fused, settings.chunk_rows)
        self.automatic_optimization = False
        self.reference = None if reference is None else reference.eval().requires_grad_(False)
        self.divergence = divergence
        self.settings = settings
        self.regulariser = settings.regulariser
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.verifier = verifier
        self.sampling = sampling
        self.special_tokens = special_tokens
        self.seed = seed
        self.reverse_kl, self.forward_kl = divergences.build("rkl"), divergences.build("kl")
        self.description = regulariser_description(divergence_name, settings.regulariser, settings.reference)

    def on_fit_start(self) -> None:
        log.info(self.description)

    def on_train_start(self) -> None:
        """A progress line every ``progress_every_steps`` RL steps (console and ``train.log``): the mean
        reward and exact drift since the last line, elapsed and left."""
        done = self.global_step // self.settings.updates_per_batch
        self.progress = StageProgress(RL_PROGRESS, int(self.trainer.estimated_stepping_batches), "step", done)
        self.window: dict[str, list[Tensor]] = {}

    def report_progress(self, step: int, logged: dict[str, Tensor]) -> None:
        """Add the step's values to the window; at every ``progress_every_steps``-th step log their means."""
        for name in PROGRESS_VALUES:
            if name in logged:
                self.window.setdefault(name, []).append(logged[name])
        if (step + 1) % self.settings.progress_every_steps == 0 or step + 1 == self.progress.total:
            self.progress.step(step + 1, {name: mean_of(values) for name, values in self.window.items()})
            self.window = {}

    # --- one training step -------------------------------------------------------------------------------

    def policy_predictions(self, model: nn.Module, batch: dict[str, Tensor]) -> NextTokenPredictions:
        """Next-token predictions of softmax(logits / temperature), the distribution the samples come from."""
        predictions = next_token_predictions(model, batch, self.fused)
        scale = 1.0 / self.sampling.temperature
        if scale == 1.0:
            return predictions
        if predictions.fused:
            bias = None if predictions.bias is None else predictions.bias * scale
            return NextTokenPredictions(
                hidden=predictions.hidden, weight=predictions.weight * scale, bias=bias
            )
        return NextTokenPredictions(logits=predictions.logits * scale)

    def reference_predictions(self, batch: dict[str, Tensor]) -> NextTokenPredictions:
        with torch.no_grad():
            return detached(self.policy_predictions(self.reference, batch))

    def token_log_probs(self, predictions: NextTokenPredictions, batch: dict[str, Tensor]) -> Tensor:
        """log π(y_t) of the labelled tokens (S, T), 0 elsewhere."""
        return labelled_log_probs(predictions, batch["labels"], self.chunk_rows)

    def aggregate(self, per_token_values: Tensor, mask: Tensor) -> Tensor:
        """``per_token_values`` (S, T) over the tokens of ``mask`` as ``aggregation`` says (linear in the
        values, so the terms can be aggregated one by one)."""
        return aggregate_tokens(
            per_token_values, mask, self.settings.aggregation, self.sampling.max_new_tokens
        )

    def rollout(self, batch: dict[str, Tensor], step: int) -> tuple[Rollout, Rollout | None]:
        """The policy's samples of the batch's prompts, and the reference's for ``prefixes: reference``."""
        prompts = [self.prompts[tuple(ids)] for ids in batch_prompts(batch)]
        draw = dict(
            prompts=prompts,
            group_size=self.settings.group_size,
            sampling=self.sampling,
            special_tokens=self.special_tokens,
            tokenizer=self.tokenizer,
            verifier=self.verifier,
            device=self.device,
        )
        policy = sample_rollout(self.model, seed=step_seed(self.seed, step, POLICY_STREAM), **draw)
        if self.regulariser.prefixes != "reference" or self.reference is None:
            return policy, None
        return policy, sample_rollout(
            self.reference, seed=step_seed(self.seed, step, REFERENCE_STREAM), **draw
        )

    def regulariser_terms(
        self,
        policy: NextTokenPredictions,
        log_probs: Tensor,
        batch: dict[str, Tensor],
        reference: NextTokenPredictions | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(surrogate R (S, T) with its gradient, detached per-token divergence values (S, T)) on
        ``batch``; ``reference``: the reference's predictions on it, when already computed."""
        sequences = batch["labels"].shape[0]
        _, mask = shifted_targets(batch["labels"])
        reference = self.reference_predictions(batch) if reference is None else reference
        if self.regulariser.estimator == "exact":
            divergence = token_divergence(self.divergence, policy, reference, mask, self.chunk_rows)
            local = per_token(divergence, sequences)
            values = local.detach()
        else:
            reference_log_probs = self.token_log_probs(reference, batch)
            local, values = sampled_estimator_terms(
                self.regulariser.estimator, log_probs, reference_log_probs
            )
        surrogate = regulariser_surrogate(
            local, values, log_probs, token_mask(batch), self.regulariser.gradient
        )
        return surrogate, values

    def exact_entropy(self, policy: NextTokenPredictions, sequences: int) -> Tensor:
        """H(π_t) per token (S, T), exact over the vocabulary (logits path)."""
        return per_token(token_entropy(policy.logits), sequences)

    def objective(
        self,
        rollout: Rollout,
        reference_rollout: Rollout | None,
        advantages: Tensor,
        old_log_probs: Tensor | None,
        beta: float,
    ) -> dict[str, Tensor]:
        """The loss of one update and its logged parts: ``policy_gradient``, ``entropy`` (when weighted),
        ``regulariser`` (the aggregated surrogate) and ``divergence`` (the mean per-token value of D or of
        the estimator)."""
        batch, settings, clip = rollout.batch, self.settings, self.settings.clip
        mask = token_mask(batch)
        policy = self.policy_predictions(self.model, batch)
        log_probs = self.token_log_probs(policy, batch)
        old_log_probs = log_probs.detach() if old_log_probs is None else old_log_probs
        reference = None if self.reference is None else self.reference_predictions(batch)
        pg = clipped_policy_loss(log_probs, old_log_probs, advantages, clip.epsilon_low, clip.epsilon_high)
        terms = {"policy_gradient": self.aggregate(pg, mask)}
        loss = settings.reward_weight * terms["policy_gradient"]
        if settings.entropy_coef > 0:
            terms["entropy"] = self.aggregate(self.exact_entropy(policy, mask.shape[0]), mask)
            loss = loss - settings.entropy_coef * terms["entropy"]
        if self.reference is not None and beta > 0 and self.regulariser.apply_to != "none":
            on, on_policy, on_log_probs, on_reference = batch, policy, log_probs, reference
            if reference_rollout is not None:
                on, on_reference = reference_rollout.batch, None
                on_policy = self.policy_predictions(self.model, on)
                on_log_probs = self.token_log_probs(on_policy, on)
            on_mask = token_mask(on)
            surrogate, values = self.regulariser_terms(on_policy, on_log_probs, on, on_reference)
            applied = regularised_samples(rollout.rewards, self.regulariser.apply_to).to(surrogate.device)
            terms["regulariser"] = self.aggregate(applied[:, None] * surrogate, on_mask)
            terms["divergence"] = values[on_mask].mean()
            loss = loss + beta * terms["regulariser"]
        terms["loss"] = loss
        terms.update(self.drift(policy, reference, mask))
        if settings.updates_per_batch > 1:
            ratio = (log_probs.detach() - old_log_probs).exp()
            clipped = (ratio < 1 - clip.epsilon_low) | (ratio > 1 + clip.epsilon_high)
            terms["clip_fraction"] = clipped[mask].float().mean()
        return terms

    def drift(
        self, policy: NextTokenPredictions, reference: NextTokenPredictions | None, mask: Tensor
    ) -> dict[str, Tensor]:
        """Exact per-token means of KL(π‖ref) (``kl_reverse``), KL(ref‖π) (``kl_forward``) and H(π)
        (``policy_entropy``) on the step's samples, from the logits the step computed (logged; none on the
        fused path, where the logits are never formed)."""
        if reference is None or policy.fused:
            return {}
        rows = mask.reshape(-1)
        with torch.no_grad():
            pi, ref = policy.logits.detach()[rows], reference.logits[rows]
            return {
                "kl_reverse": self.reverse_kl(pi, ref).mean(),
                "kl_forward": self.forward_kl(pi, ref).mean(),
                "policy_entropy": token_entropy(pi).mean(),
            }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        updates = self.settings.updates_per_batch
        step = self.global_step // updates
        rollout, reference_rollout = self.rollout(batch, step)
        advantages = (
            group_advantages(
                rollout.rewards, self.settings.advantage, self.settings.scale_rewards, self.settings.pass_k
            )
            .reshape(-1)
            .to(self.device)
        )
        old_log_probs = None  # one update: the sampling policy is the policy itself (ratio 1)
        if updates > 1:
            with torch.no_grad():
                old_log_probs = self.token_log_probs(
                    self.policy_predictions(self.model, rollout.batch), rollout.batch
                )
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))  # batches: one schedule step each
        beta = scheduled_beta(self.regulariser, step / max(1, total_steps - 1))
        optimizer = self.optimizers()
        for _ in range(updates):
            terms = self.objective(rollout, reference_rollout, advantages, old_log_probs, beta)
            optimizer.zero_grad()
            self.manual_backward(terms["loss"])
            if self.settings.max_grad_norm is not None:
                self.clip_gradients(optimizer, gradient_clip_val=self.settings.max_grad_norm)
            optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        rewards = rollout.rewards
        logged = {
            **{name: value.detach() for name, value in terms.items()},
            "reward": rewards.mean(),
            "reward_std": rewards.std(dim=1).mean() if rewards.shape[1] > 1 else rewards.new_zeros(()),
            "beta": torch.tensor(beta),
            "completion_length": shifted_targets(rollout.batch["labels"])[1].float().sum() / rewards.numel(),
        }
        self.record_training_terms(logged, batch_size=rewards.shape[0])
        self.report_progress(step, logged)

    # --- evaluation --------------------------------------------------------------------------------------

    def log_answer_metrics(self, split: str) -> None:
        """The sampled answer metrics of ``lm_kd``, then the exact ones, the reward and the divergences to the
        reference on the policy's samples, and forgetting on ``mixed`` data."""
        super().log_answer_metrics(split)
        if split not in self.evaluation or self.trainer.sanity_checking:
            return
        evaluation = self.evaluation[split]
        datamodule = self.trainer.datamodule
        prompts = datamodule.eval_prompts(split)[: evaluation.prompts]
        metrics: dict[str, float] = {}
        with self.trainer.precision_plugin.forward_context():
            log_probs = answer_log_probabilities(
                self.model,
                datamodule,
                prompts,
                evaluation.batch_size,
                self.device,
                evaluation.sampling.temperature,
            )
            metrics.update(exact_answer_metrics(log_probs, self.settings.evaluation.exact_ks))
            rollout = sample_rollout(
                self.model,
                prompts,
                self.settings.group_size,
                evaluation.sampling,
                self.special_tokens,
                self.tokenizer,
                self.verifier,
                step_seed(evaluation.seed, 0, EVALUATION_STREAM),
                self.device,
            )
            metrics["reward"] = float(rollout.rewards.mean())
            if self.reference is not None:
                metrics.update(
                    policy_sample_divergences(self.model, self.reference, rollout.batch, self.chunk_rows)
                )
            metrics.update(forgetting(self.model, datamodule, split, evaluation.batch_size, self.device))
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, sync_dist=True)


def check_settings(method: DictConfig) -> None:
    """The rules across keys that ``conf/method/rlvr.yaml``'s ``accepts:`` cannot declare (the pre-flight
    and the pipeline call it)."""
    check_evaluation_settings(method)
    regulariser = method.regulariser
    if method.advantage in ("grpo", "rloo") and method.group_size < 2:
        raise ConfigError(
            f"method.advantage={method.advantage} compares the samples of a group: method.group_size must be "
            f">= 2 (got {method.group_size})"
        )
    if method.advantage == "pass_at_k" and method.pass_k > method.group_size:
        raise ConfigError(
            f"method.pass_k={method.pass_k} must be <= method.group_size={method.group_size} "
            "(the pass_at_k advantage draws k of the group's samples)"
        )
    if regulariser.prefixes == "reference" and (regulariser.estimator, regulariser.gradient) != (
        "exact",
        "local",
    ):
        raise ConfigError(
            "method.regulariser.prefixes=reference takes the divergence on the reference's own samples, "
            "which do not depend on the policy: it needs estimator=exact and gradient=local (got "
            f"estimator={regulariser.estimator}, gradient={regulariser.gradient})"
        )
    if regulariser.prefixes == "reference" and regulariser.apply_to == "incorrect":
        raise ConfigError(
            "method.regulariser.apply_to=incorrect marks the policy's own samples, not the reference's: with "
            "prefixes=reference use all, failed_groups or solved_groups"
        )
    if method.reference == "none" and (regulariser.beta > 0 or (regulariser.get("beta_final") or 0) > 0):
        raise ConfigError(
            "method.reference=none has no regulariser: set method.regulariser.beta=0 (and beta_final "
            "null), or choose reference=init or teacher"
        )
    if method.optimizer.get("scheduler", "none") not in ("none", "linear"):
        raise ConfigError(
            "method.optimizer.scheduler: rlvr steps its own optimiser per update; use none or linear (got "
            f"{method.optimizer.scheduler})"
        )


def training_prompts(datamodule: Any) -> dict[tuple[int, ...], Any]:
    """The training prompts by their token ids (a training row's prompt finds its answers here)."""
    return {tuple(prompt.prompt_ids): prompt for prompt in datamodule.eval_prompts("train")}


def stages(cfg: DictConfig, datamodule: Any) -> list[Stage]:
    """The initial policy (and the teacher for ``reference: teacher``):
    :func:`~divergence_lab.methods.initial_policy.policy_stages`; the divergence is checked first."""
    check_settings(cfg.method)
    return policy_stages(cfg, datamodule)


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> PolicyOptimisationModule:
    """The policy (a copy of the initial policy), its frozen reference and the verifier of ``cfg.method``."""
    method = cfg.method
    model = initial_policy(cfg, datamodule, outputs)
    reference = frozen_reference(cfg, datamodule, outputs)
    models = (model,) if reference is None else (model, reference)
    fused = uses_fused_linear(method, *models)
    if fused and method.entropy_coef > 0:
        raise ConfigError(
            "method.entropy_coef > 0 needs the logits (the fused linear path does not form them): set "
            "method.fused_linear=false or entropy_coef=0"
        )
    verifier = instantiate_target(method.verifier, "method.verifier")
    return PolicyOptimisationModule(
        model,
        reference,
        divergences.build(**cfg.divergence),
        cfg.divergence.name,
        method,
        training_prompts(datamodule),
        datamodule.tokenizer,
        verifier,
        sampling_of(method.generation, datamodule),
        (datamodule.pad_token_id, datamodule.eos_token_id),
        cfg.seed,
        cfg.trainer.max_epochs,
        answer_evaluations(method.evaluation, datamodule, cfg.seed),
        fused=fused,
    )
