"""``method=lm_kd``: token-level distillation of a causal language model from a frozen causal LM teacher.

The student minimises, per training batch::

    (1 - alpha) · NLL(data completion tokens) + alpha · mean_t D(student_t, teacher_t)

where ``D`` is any pointwise registry divergence (``divergence=kl`` is supervised KD, ``rkl`` reverse KL,
``gjs`` GKD's generalised Jensen-Shannon ...; temperature and the T² factor belong to the divergence
config) between the two models' next-token distributions, averaged over the tokens whose ``mask`` holds
(the completion tokens and their eos; prompt and padding rows pass the registry ``mask=False``).

On-policy batches (GKD, Agarwal et al. 2024): with probability ``method.on_policy_fraction`` (λ) per
training step (a draw seeded by the run's seed and the step, so a resumed run repeats it), the student
samples completions of the batch's prompts (``method.generation``: temperature, top-k, new tokens) and
``D`` is taken on those generated tokens, up to and including eos, instead of the data's completions.
λ = 0 is supervised KD (the student never generates), λ = 1 fully on-policy. The NLL term stays on the
data's completions in every step, so ``alpha`` weighs the same two objectives whatever the batch; with
``alpha = 1`` there is no NLL term and on-policy steps are pure distillation, as in TRL's GKD trainer.

At large vocabularies (``method.fused_linear``: ``auto`` = from ``fused_linear_min_vocab`` output tokens,
or ``true`` / ``false``) both terms run on last hidden states and output projections without building the
logits (:mod:`divergence_lab.methods.lm_tokens`); otherwise on logits (where the registry member switches
to its own chunked path for large inputs).

Evaluation (:class:`CausalLMModule`): ``val/nll`` and ``test/nll`` (mean NLL per labelled token),
``val/kl_to_teacher`` / ``test/kl_to_teacher`` (forward KL(teacher ‖ student) per token at T = 1, whatever
``D`` is), and the answer metrics of generated completions (:mod:`divergence_lab.methods.lm_generation`):
``exact_match`` (greedy), ``pass@k``, ``distinct_correct``, ``answer_entropy``, ``sample_accuracy``, on the
first ``method.evaluation.val_prompts`` validation prompts each epoch and on ``test_prompts`` test prompts.
There is no ``test/acc``: the accuracy of a language model is ``exact_match``.

The teacher is trained once with NLL on the same data and loaded frozen: its recipe
(:func:`lm_teacher_recipe`, a :class:`~divergence_lab.methods.recipes.TeacherRecipe`) trains it through the
run layer's ``context.fit_and_test``, and the teacher cache (``context.trained_teacher``) trains it on first
use only. Its weights are kept out of the run's checkpoints (they come from the stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchmetrics import MeanMetric
from transformers import PreTrainedModel

from divergence_lab import divergences
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.text.protocol import LanguageModelData
from divergence_lab.data.text.tokenizer import load_tokenizer, tokenizer_fingerprint
from divergence_lab.ground.errors import ConfigError
from divergence_lab.methods.classifier import make_optimizer, total_optimizer_steps
from divergence_lab.methods.frozen_models import FrozenModels
from divergence_lab.methods.lm_generation import (
    AnswerEvaluation,
    Sampling,
    evaluate_answers,
    on_policy_batch,
    on_policy_step,
)
from divergence_lab.methods.lm_tokens import (
    NextTokenPredictions,
    detached,
    masked_mean,
    next_token_predictions,
    shifted_targets,
    token_divergence,
    token_nll,
)
from divergence_lab.methods.recipes import TeacherRecipe
from divergence_lab.methods.stages import (
    FitAndTest,
    Stage,
    StageContext,
    StageOutput,
    cpu_state,
    network_from_state,
)
from divergence_lab.methods.training_terms import TrainingTermsLogging
from divergence_lab.models.causal_lm import (
    build_causal_lm,
    local_model_config,
    output_vocabulary,
    plain_output_projection,
)

SPLITS = ("val", "test")
LM_TEACHER = "causal_lm"  # the teacher recipe's name, part of its cache key
LM_TEACHER_PROGRESS = {"loss": "train/loss", "val nll": "val/nll"}  # the teacher's per-epoch progress line
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # a saved model folder that holds a tokenizer


class CausalLMModule(TrainingTermsLogging):
    """A causal LM ``model`` trained by the mean NLL of the labelled tokens, with the language-model
    evaluation: ``<split>/nll`` per batch, and the answer metrics of ``evaluation[split]`` at the end of
    each validation or test epoch (a split missing from ``evaluation`` gets none).

    ``fused``: compute on hidden states and the output projection (:mod:`~divergence_lab.methods.lm_tokens`)
    in blocks of ``chunk_rows`` rows (0: sized from the vocabulary).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        optimizer: dict[str, Any],
        max_epochs: int,
        evaluation: dict[str, AnswerEvaluation],
        fused: bool = False,
        chunk_rows: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_config = dict(optimizer)
        self.max_epochs = max_epochs
        self.evaluation = dict(evaluation)
        self.fused = fused
        self.chunk_rows = chunk_rows
        self.nll = nn.ModuleDict({split: MeanMetric() for split in SPLITS})

    def predictions(self, model: nn.Module, batch: dict[str, Tensor]) -> NextTokenPredictions:
        return next_token_predictions(model, batch, self.fused)

    def data_nll(self, predictions: NextTokenPredictions, batch: dict[str, Tensor]) -> Tensor:
        """Mean NLL of the batch's labelled tokens."""
        targets, mask = shifted_targets(batch["labels"])
        return masked_mean(token_nll(predictions, targets, mask, self.chunk_rows), mask)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named loss terms of one batch: ``"loss"`` is minimised, each term is logged as ``train/<name>``."""
        nll = self.data_nll(self.predictions(self.model, batch), batch)
        return {"loss": nll, "nll": nll.detach()}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        self.record_training_terms(terms, batch_size=batch["input_ids"].shape[0])
        return terms["loss"]

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> tuple[NextTokenPredictions, Tensor]:
        """Accumulate the per-token metrics of one teacher-forced batch of ``split``; return the model's
        predictions and the mask of the labelled rows."""
        student = self.predictions(self.model, batch)
        targets, mask = shifted_targets(batch["labels"])
        self.nll[split].update(token_nll(student, targets, mask, self.chunk_rows)[mask])
        self.log(f"{split}/nll", self.nll[split])
        return student, mask

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def log_answer_metrics(self, split: str) -> None:
        """Generate from ``split``'s prompts and log the answer metrics as ``<split>/<name>``."""
        if split not in self.evaluation or self.trainer.sanity_checking:
            return
        with self.trainer.precision_plugin.forward_context():
            metrics = evaluate_answers(
                self.model, self.trainer.datamodule, split, self.evaluation[split], self.device
            )
        for name, value in metrics.items():  # every process generates the same: the mean is the value
            self.log(f"{split}/{name}", value, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log_answer_metrics("val")

    def on_test_epoch_end(self) -> None:
        self.log_answer_metrics("test")

    def configure_optimizers(self):
        steps = total_optimizer_steps(self, self.optimizer_config)
        return make_optimizer(self.model.parameters(), self.optimizer_config, self.max_epochs, steps)


class LMDistillationModule(FrozenModels, CausalLMModule):
    """A causal LM student distilled from a frozen ``teacher`` (see the module docstring).

    The teacher is frozen (:class:`~divergence_lab.methods.frozen_models.FrozenModels`). ``sampling``: how
    the student draws on-policy completions (padded and ended with the data's
    ``special_tokens``: ``(pad_token_id, eos_token_id)``); ``seed``: the run's seed, which with the step
    decides the on-policy steps.
    """

    frozen_names = ("teacher",)

    def __init__(
        self,
        model: PreTrainedModel,
        teacher: PreTrainedModel,
        divergence: divergences.Divergence,
        alpha: float,
        on_policy_fraction: float,
        sampling: Sampling,
        special_tokens: tuple[int, int],
        seed: int,
        optimizer: dict[str, Any],
        max_epochs: int,
        evaluation: dict[str, AnswerEvaluation],
        fused: bool = False,
        chunk_rows: int = 0,
    ) -> None:
        super().__init__(model, optimizer, max_epochs, evaluation, fused, chunk_rows)
        self.teacher = teacher.eval().requires_grad_(False)
        self.divergence = divergence
        self.alpha = alpha
        self.on_policy_fraction = on_policy_fraction
        self.sampling = sampling
        self.pad_token_id, self.eos_token_id = special_tokens
        self.seed = seed
        self.forward_kl = divergences.build("kl")  # val/ and test/kl_to_teacher, at T = 1
        self.kl_to_teacher = nn.ModuleDict({split: MeanMetric() for split in SPLITS})

    def teacher_predictions(self, batch: dict[str, Tensor]) -> NextTokenPredictions:
        with torch.no_grad():
            return detached(self.predictions(self.teacher, batch))

    def distillation(self, student: NextTokenPredictions, batch: dict[str, Tensor]) -> Tensor:
        """Mean of ``D(student_t, teacher_t)`` over the batch's labelled tokens."""
        _, mask = shifted_targets(batch["labels"])
        values = token_divergence(
            self.divergence, student, self.teacher_predictions(batch), mask, self.chunk_rows
        )
        return masked_mean(values, mask)

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        on_policy = on_policy_step(self.seed, self.global_step, self.on_policy_fraction)
        needs_data = not on_policy or self.alpha < 1.0
        data = self.predictions(self.model, batch) if needs_data else None
        nll = self.data_nll(data, batch) if data is not None else None
        if on_policy:
            distilled = on_policy_batch(
                self.model, batch, self.sampling, self.pad_token_id, self.eos_token_id
            )
            student = self.predictions(self.model, distilled)
        else:
            distilled, student = batch, data
        distill = self.distillation(student, distilled)
        loss = self.alpha * distill if nll is None else (1.0 - self.alpha) * nll + self.alpha * distill
        terms = {"loss": loss, "distill": distill.detach(), "on_policy": distill.new_tensor(float(on_policy))}
        return terms if nll is None else {**terms, "nll": nll.detach()}

    def evaluation_step(self, batch: dict[str, Tensor], split: str) -> tuple[NextTokenPredictions, Tensor]:
        """The student's metrics, and its forward KL from the teacher per labelled token."""
        student, mask = super().evaluation_step(batch, split)
        values = token_divergence(
            self.forward_kl, student, self.teacher_predictions(batch), mask, self.chunk_rows
        )
        self.kl_to_teacher[split].update(values[mask])
        self.log(f"{split}/kl_to_teacher", self.kl_to_teacher[split])
        return student, mask


def causal_lm_for(model_cfg: DictConfig, datamodule: Any, key: str = "model") -> PreTrainedModel:
    """The causal LM of ``model_cfg`` for the data's vocabulary and special tokens."""
    return build_causal_lm(
        model_cfg,
        datamodule.vocab_size,
        datamodule.pad_token_id,
        datamodule.eos_token_id,
        datamodule.bos_token_id,
        key,
    )


def sampling_of(settings: DictConfig, datamodule: Any) -> Sampling:
    """The :class:`Sampling` of ``{temperature, top_k, max_new_tokens}`` (``max_new_tokens: null``: the
    data's longest completion with its eos)."""
    length = settings.get("max_new_tokens") or datamodule.max_new_tokens
    return Sampling(float(settings.temperature), int(length), settings.get("top_k"))


def answer_evaluations(
    settings: DictConfig, datamodule: Any, seed: int, splits: tuple[str, ...] = SPLITS
) -> dict[str, AnswerEvaluation]:
    """The answer evaluation of each of ``splits`` from ``method.evaluation``."""
    prompts = {"val": settings.val_prompts, "test": settings.test_prompts}
    return {
        split: AnswerEvaluation(
            sampling_of(settings, datamodule),
            int(settings.samples),
            tuple(int(k) for k in settings.ks),
            int(settings.batch_size),
            seed,
            prompts[split],
        )
        for split in splits
    }


def uses_fused_linear(method: DictConfig, *models: PreTrainedModel) -> bool:
    """``method.fused_linear``: ``auto`` is true from ``fused_linear_min_vocab`` output tokens when the
    models' logits are plain linear projections of their last hidden states."""
    setting = method.get("fused_linear", "auto")
    plain = all(plain_output_projection(model) for model in models)
    if setting is True and not plain:
        raise ConfigError(
            "method.fused_linear=true: a model scales or soft-caps its logits, which the fused path does not "
            "apply; use method.fused_linear=false"
        )
    if setting == "auto":
        return plain and output_vocabulary(models[0]) >= method.fused_linear_min_vocab
    return bool(setting)


def check_language_model_data(cfg: DictConfig, datamodule: Any) -> None:
    """Refuse data that is not prompt/completion text for a causal LM."""
    if not isinstance(datamodule, LanguageModelData):
        raise ConfigError(
            f"method={cfg.method.name} needs language-model data (data=lm_synthetic, lm_jsonl or "
            f"lm_saved); got data={cfg.data.name}"
        )


def check_shared_vocabulary(cfg: DictConfig, datamodule: Any) -> None:
    """Refuse a student and a teacher that do not score the same tokens: a saved model whose tokenizer is
    not the data's, whose vocabulary is smaller than the data's, or whose output vocabulary differs from
    the other model's. Reads the saved configs and tokenizers only, not the weights."""
    models = {"model": cfg.model, "method.teacher.model": cfg.method.teacher.model}
    sizes = {}
    data_tokenizer = tokenizer_fingerprint(datamodule.tokenizer)
    for key, model_cfg in models.items():
        if model_cfg.get("path") is None:
            sizes[key] = datamodule.vocab_size  # built from a config, for the data's vocabulary
            continue
        try:
            config = local_model_config(model_cfg.path)
        except ConfigError as error:
            raise ConfigError(f"{key}.{error}") from None
        sizes[key] = int(config.vocab_size)
        folder = config.name_or_path
        if any((Path(folder) / name).is_file() for name in TOKENIZER_FILES):
            saved = load_tokenizer(folder, key=f"{key}.path")
            if tokenizer_fingerprint(saved) != data_tokenizer:
                raise ConfigError(
                    f"{key}.path: the tokenizer saved in {folder} is not the data's (data.tokenizer="
                    f"{cfg.data.get('tokenizer') or 'null'}); student and teacher must share the data's "
                    f"tokenizer: set data.tokenizer={folder}"
                )
        if sizes[key] < datamodule.vocab_size:
            raise ConfigError(
                f"{key}.path: the model in {folder} has {sizes[key]} output tokens but the data's tokenizer "
                f"has {datamodule.vocab_size}"
            )
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{key} {size}" for key, size in sizes.items())
        raise ConfigError(
            f"student and teacher must share the vocabulary to be compared token by token; output tokens: "
            f"{shown}"
        )


def check_settings(method: DictConfig) -> None:
    """The rule across the evaluation's keys that ``conf/method/lm_kd.yaml`` cannot declare (the pre-flight
    and the pipeline call it): Pass@k needs k <= the samples drawn per prompt."""
    evaluation = method.evaluation
    ks, samples = list(evaluation.ks), evaluation.samples
    if any(k > samples for k in ks):
        raise ConfigError(
            f"method.evaluation.ks must be a non-empty list of integers in [1, samples={samples}] for "
            f"pass@k (got {ks!r})"
        )


def lm_teacher_recipe(
    cfg: DictConfig, fit_and_test: FitAndTest, key: str = "method.teacher"
) -> TeacherRecipe:
    """How the causal LM of the config at ``key`` (``cfg.method.teacher``; ``method.initial``, the initial
    policy of the RL methods) is built (its model for the data's vocabulary) and trained by ``fit_and_test``
    (NLL of the data's completions for ``max_epochs`` epochs, then tested: ``test/nll``,
    ``test/exact_match``, ``test/pass@k`` ...). The fused path follows ``cfg.method``; it is an execution
    choice, not in the key."""

    def build_teacher(teacher_cfg: DictConfig, data_cfg: DictConfig) -> tuple[Any, nn.Module]:
        datamodule = instantiate_datamodule(data_cfg, seed=teacher_cfg.seed)
        return datamodule, causal_lm_for(teacher_cfg.model, datamodule, f"{key}.model")

    def train_teacher(model: nn.Module, teacher_cfg: DictConfig, datamodule: Any) -> dict[str, float]:
        module = CausalLMModule(
            model,
            dict(teacher_cfg.optimizer),
            teacher_cfg.max_epochs,
            answer_evaluations(teacher_cfg.evaluation, datamodule, teacher_cfg.seed, ("test",)),
            fused=uses_fused_linear(cfg.method, model),
            chunk_rows=cfg.method.chunk_rows,
        )
        return fit_and_test(module, datamodule, teacher_cfg.max_epochs, LM_TEACHER_PROGRESS)

    return TeacherRecipe(LM_TEACHER, build_teacher, train_teacher)


def stages(cfg: DictConfig, datamodule: Any) -> list[Stage]:
    """Stage ``teacher``: the causal LM teacher of ``cfg.method.teacher``, trained with NLL on the run's data
    (teacher cache, trained on first use by the run layer's ``context.fit_and_test``), its weights kept in the
    run folder. The data and the models' vocabularies are checked first."""
    check_language_model_data(cfg, datamodule)
    check_shared_vocabulary(cfg, datamodule)

    def teacher(context: StageContext) -> StageOutput:
        recipe = lm_teacher_recipe(cfg, context.fit_and_test)
        return {"state": cpu_state(context.trained_teacher(cfg.method.teacher, recipe))}

    return [Stage("teacher", teacher)]


def build(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> LMDistillationModule:
    """Distillation of the causal LM ``cfg.model`` from the cached teacher with ``cfg.divergence``."""
    method = cfg.method
    model = causal_lm_for(cfg.model, datamodule)
    teacher = network_from_state(
        lambda: causal_lm_for(method.teacher.model, datamodule, "method.teacher.model"),
        outputs["teacher"]["state"],
    )
    return LMDistillationModule(
        model,
        teacher,
        divergences.build(**cfg.divergence),
        alpha=method.alpha,
        on_policy_fraction=method.on_policy_fraction,
        sampling=sampling_of(method.generation, datamodule),
        special_tokens=(datamodule.pad_token_id, datamodule.eos_token_id),
        seed=cfg.seed,
        optimizer=dict(method.optimizer),
        max_epochs=cfg.trainer.max_epochs,
        evaluation=answer_evaluations(method.evaluation, datamodule, cfg.seed),
        fused=uses_fused_linear(method, model, teacher),
        chunk_rows=method.chunk_rows,
    )
