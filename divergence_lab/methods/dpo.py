"""``method=dpo``: direct preference optimisation of a causal LM with an f-divergence regulariser (f-DPO,
:mod:`divergence_lab.methods.f_dpo`), on preference pairs made from the task's verifiable answers.

Pairs (stage ``pairs``, after stage ``initial``, the cached SFT policy π₀): each distinct training prompt
gets ``method.pairs.samples`` completions sampled from π₀ (``method.pairs``: temperature, top-k, new tokens;
seeded by ``method.pairs.seed``, so every run of a config trains on the same pairs). The rejected completion
is the first sample whose answer is wrong (:func:`~divergence_lab.metrics.generation.extract_answer` not
among the prompt's answers), as π₀ generated it (up to and including its eos); the chosen completion is the
data's (a correct answer). A prompt whose samples are all correct has no pair and is left out of training:
a made-up wrong answer would be text π₀ never produces, whose log-ratio says nothing about the policy's own
mistakes. The stage logs how many prompts have a pair. A training batch is the data's rows; the rows whose
prompt has a pair are the chosen completions, each paired with its prompt's rejected one.

Loss per pair, with sequence log-probabilities of the completion tokens (eos included) under the policy π
(initialised from π₀) and the frozen reference π_ref = π₀ (``method.reference: init``)::

    ℓ = −log σ(β f′(e^{u_w}) − β f′(e^{u_l})),   u = log π(y|x) − log π_ref(y|x)

averaged over the batch's pairs; ``f`` is the ``divergence`` group's registry member (``rkl`` plain DPO,
``kl`` forward KL, ``js``, ``alpha``; others are refused by :func:`stages` before anything trains, since
:func:`check_settings` sees ``method`` only), ``β = method.beta``. For ``divergence=alpha`` the member's
``alpha`` is read in ``method.alpha_convention``: ``registry`` (Amari's a, the member's own meaning),
``paper`` (the f-DPO paper's α) or ``trl`` (TRL's ``f_alpha_divergence_coef`` since its Feb-2026 refactor,
α_paper = 1 − α_TRL).

Logged per step: ``train/loss``, ``train/reward_margin`` (mean ``r_w − r_l``), ``train/reward_accuracy``
(fraction with ``r_w > r_l``), ``train/reward_chosen``, ``train/reward_rejected``; evaluation is
:class:`~divergence_lab.methods.lm_kd.CausalLMModule`'s (``nll`` of the data's completions, greedy exact
match, pass@k, distinct correct answers, answer entropy).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from transformers import PreTrainedModel

from divergence_lab.data.text.batches import right_padded_batch
from divergence_lab.data.text.rows import EvalPrompt
from divergence_lab.data.text.tokenizer import decode_completion
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods import lm_kd
from divergence_lab.methods.f_dpo import check_f_dpo_divergence, f_dpo_loss, paper_alpha
from divergence_lab.methods.frozen_models import FrozenModels
from divergence_lab.methods.initial_policy import (
    frozen_reference,
    initial_policy,
    policy_stages,
)
from divergence_lab.methods.lm_generation import (
    AnswerEvaluation,
    Sampling,
    batch_prompts,
    generate_new_tokens,
    generation_config,
    seeded_generation,
)
from divergence_lab.methods.lm_kd import (
    CausalLMModule,
    answer_evaluations,
    sampling_of,
    uses_fused_linear,
)
from divergence_lab.methods.lm_tokens import labelled_log_probs, next_token_predictions
from divergence_lab.methods.stages import Stage, StageContext, StageOutput
from divergence_lab.metrics.generation import extract_answer

log = logging.getLogger(__name__)

PAIRS = "pairs"  # the stage holding the rejected completions
NEUTRAL_TEMPERATURE = 1.0  # sequence probabilities have no temperature: the divergence's must stay 1
DIRECTION_WORDS = {
    "rkl": "KL(policy ‖ reference), reverse: plain DPO",
    "kl": "KL(reference ‖ policy), forward, mass-covering",
    "js": "2·JS(policy, reference)",
}

Pairs = dict[tuple[int, ...], list[int]]  # prompt ids -> the rejected completion's ids


class DPOModule(FrozenModels, CausalLMModule):
    """A causal LM policy trained by the f-DPO loss on ``pairs`` against a frozen ``reference`` (see the
    module docstring); ``alpha`` is the paper's α (``divergence="alpha"`` only). The reference is frozen
    (:class:`~divergence_lab.methods.frozen_models.FrozenModels`)."""

    frozen_names = ("reference",)

    def __init__(
        self,
        model: PreTrainedModel,
        reference: PreTrainedModel,
        pairs: Pairs,
        divergence: str,
        beta: float,
        alpha: float | None,
        pad_token_id: int,
        optimizer: dict[str, Any],
        max_epochs: int,
        evaluation: dict[str, AnswerEvaluation],
        fused: bool = False,
        chunk_rows: int = 0,
    ) -> None:
        super().__init__(model, optimizer, max_epochs, evaluation, fused, chunk_rows)
        self.reference = reference.eval().requires_grad_(False)
        self.pairs = pairs
        self.divergence = divergence
        self.beta = beta
        self.alpha = alpha
        self.pad_token_id = pad_token_id

    def on_fit_start(self) -> None:
        log.info(
            "dpo: %s; %d preference pairs", describe(self.divergence, self.beta, self.alpha), len(self.pairs)
        )

    def sequence_log_probs(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """``log model(completion | prompt)`` per row: the sum over the labelled tokens (eos included)."""
        predictions = next_token_predictions(model, batch, self.fused)
        return labelled_log_probs(predictions, batch["labels"], self.chunk_rows).sum(dim=1)

    def pair_terms(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], int] | None:
        """The f-DPO terms of the batch's pairs and their number (None when no row's prompt has a pair)."""
        pairs = pair_batch(batch, self.pairs, self.pad_token_id)
        if pairs is None:
            return None
        pairs = {name: t.to(batch["input_ids"].device) for name, t in pairs.items()}
        policy_chosen, policy_rejected = self.sequence_log_probs(self.model, pairs).chunk(2)
        with torch.no_grad():
            ref_chosen, ref_rejected = self.sequence_log_probs(self.reference, pairs).chunk(2)
        losses, chosen, rejected = f_dpo_loss(
            policy_chosen, policy_rejected, ref_chosen, ref_rejected, self.beta, self.divergence, self.alpha
        )
        terms = {
            "loss": losses.mean(),
            "reward_margin": (chosen - rejected).mean(),
            "reward_accuracy": (chosen > rejected).to(chosen.dtype).mean(),
            "reward_chosen": chosen.mean(),
            "reward_rejected": rejected.mean(),
        }
        return terms, losses.shape[0]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        """The mean f-DPO loss of the batch's pairs; a batch without pairs is skipped (no step)."""
        paired = self.pair_terms(batch)
        if paired is None:
            return None
        terms, count = paired
        self.record_training_terms(terms, batch_size=count)
        return terms["loss"]


def describe(divergence: str, beta: float, alpha: float | None) -> str:
    """One line that says which divergence regularises the policy, in words."""
    if divergence == "alpha":
        what = f"the f-DPO α-divergence at α={alpha:g} (registry alpha a={1.0 - 2.0 * alpha:g})"
    else:
        what = DIRECTION_WORDS[divergence]
    return f"f-DPO with beta={beta:g} x {what}, to the initial policy"


def pair_batch(batch: dict[str, Tensor], pairs: Pairs, pad_token_id: int) -> dict[str, Tensor] | None:
    """A right-padded batch of the chosen completions (the rows of ``batch`` whose prompt has a pair) then
    the rejected ones in the same order, labelled on the completions; None when no row has a pair."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    chosen, rejected = [], []
    for row, prompt in enumerate(batch_prompts(batch)):
        if tuple(prompt) in pairs:
            chosen.append((batch["input_ids"][row, : lengths[row]].tolist(), len(prompt)))
            rejected.append(([*prompt, *pairs[tuple(prompt)]], len(prompt)))
    return right_padded_batch(chosen + rejected, pad_token_id) if chosen else None


def first_wrong(texts: list[str], answers: frozenset[str]) -> int | None:
    """The index of the first completion whose answer is not among ``answers`` (None: all are correct)."""
    return next((index for index, text in enumerate(texts) if extract_answer(text) not in answers), None)


def sample_pairs(
    model: nn.Module, datamodule: Any, sampling: Sampling, samples: int, batch_size: int, seed: int
) -> StageOutput:
    """Sample ``samples`` completions of each training prompt from ``model`` (seeded by ``seed``) and keep
    the first wrong one per prompt: ``prompt_index`` (P,) into ``eval_prompts("train")``, ``rejected``
    (P, G) its tokens up to and including eos, padded, and ``rejected_length`` (P,)."""
    prompts: list[EvalPrompt] = datamodule.eval_prompts("train")
    device = next(model.parameters()).device
    pad, eos = datamodule.pad_token_id, datamodule.eos_token_id
    config = generation_config(sampling.max_new_tokens, pad, eos, sampling, num_return_sequences=samples)
    indices, rejected = [], []
    with seeded_generation(seed, device):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            batch = {name: t.to(device) for name, t in datamodule.generation_batch(chunk).items()}
            drawn = generate_new_tokens(model, batch, config).tolist()
            for offset, prompt in enumerate(chunk):
                own = drawn[offset * samples : (offset + 1) * samples]
                wrong = first_wrong(
                    [decode_completion(datamodule.tokenizer, ids) for ids in own], prompt.answers
                )
                if wrong is not None:
                    ids = own[wrong]
                    indices.append(start + offset)
                    rejected.append(ids[: ids.index(eos) + 1] if eos in ids else ids)
    log.info(
        "dpo: %d of %d training prompts have a wrong answer among %d samples of the initial policy and make "
        "a pair; %d (all samples correct) are left out",
        len(indices),
        len(prompts),
        samples,
        len(prompts) - len(indices),
    )
    width = max((len(ids) for ids in rejected), default=0)
    padded = torch.full((len(rejected), width), pad, dtype=torch.long)
    for row, ids in enumerate(rejected):
        padded[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return {
        "prompt_index": torch.tensor(indices, dtype=torch.long),
        "rejected": padded,
        "rejected_length": torch.tensor([len(ids) for ids in rejected], dtype=torch.long),
        "prompts": len(prompts),
    }


def pairs_of(output: StageOutput, datamodule: Any) -> Pairs:
    """The stage's pairs by the training prompt's token ids."""
    prompts = datamodule.eval_prompts("train")
    return {
        tuple(prompts[index].prompt_ids): ids[:length]
        for index, ids, length in zip(
            output["prompt_index"].tolist(),
            output["rejected"].tolist(),
            output["rejected_length"].tolist(),
            strict=True,
        )
    }


def f_dpo_settings(cfg: DictConfig) -> tuple[str, float | None]:
    """The divergence's registry name and, for ``alpha``, the paper's α; refuse, in one line, a member
    without the f-DPO property, an α outside [0, 1] in ``method.alpha_convention``, or a temperature."""
    divergence = cfg.divergence
    check_f_dpo_divergence(divergence.name)
    if divergence.get("temperature", NEUTRAL_TEMPERATURE) != NEUTRAL_TEMPERATURE:
        raise ConfigError(
            f"divergence.temperature={divergence.temperature}: method=dpo compares sequence probabilities, "
            f"which have no temperature; leave it at {NEUTRAL_TEMPERATURE:g}"
        )
    if divergence.name != "alpha":
        return divergence.name, None
    alpha = paper_alpha(
        float(divergence.alpha), cfg.method.alpha_convention, "divergence.alpha", "method.alpha_convention"
    )
    return divergence.name, alpha


def check_settings(method: DictConfig) -> None:
    """The rule across keys that ``conf/method/dpo.yaml``'s ``accepts:`` cannot declare (the pre-flight and
    the pipeline call it): Pass@k needs k <= the evaluation's samples. The divergence is checked by
    :func:`stages`, which sees the whole config."""
    lm_kd.check_settings(method)


def stages(cfg: DictConfig, datamodule: Any) -> list[Stage]:
    """Stage ``initial`` (π₀, :func:`~divergence_lab.methods.initial_policy.policy_stages`) and stage
    ``pairs`` (:func:`sample_pairs` from π₀). The divergence and the settings are checked first."""
    check_settings(cfg.method)
    f_dpo_settings(cfg)
    pairs = cfg.method.pairs

    def sampled_pairs(context: StageContext) -> StageOutput:
        model = initial_policy(cfg, datamodule, context.outputs).to(context.device)
        sampling = sampling_of(pairs, datamodule)
        return sample_pairs(model, datamodule, sampling, pairs.samples, pairs.batch_size, pairs.seed)

    return [*policy_stages(cfg, datamodule), Stage(PAIRS, sampled_pairs)]


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> DPOModule:
    """The policy (a copy of π₀), its frozen reference π₀ and the stage's pairs, with ``cfg.divergence``'s
    f-DPO reward."""
    method = cfg.method
    divergence, alpha = f_dpo_settings(cfg)
    model = initial_policy(cfg, datamodule, outputs)
    reference = frozen_reference(cfg, datamodule, outputs)
    return DPOModule(
        model,
        reference,
        pairs_of(outputs[PAIRS], datamodule),
        divergence,
        beta=method.beta,
        alpha=alpha,
        pad_token_id=datamodule.pad_token_id,
        optimizer=dict(method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
        evaluation=answer_evaluations(method.evaluation, datamodule, cfg.seed),
        fused=uses_fused_linear(method, model, reference),
        chunk_rows=method.chunk_rows,
    )
