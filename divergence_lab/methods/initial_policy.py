"""The initial policy of the language-model post-training methods (``rlvr``, ``kdrl``, ``dpo``), and their
frozen reference.

The initial policy π₀ is the run's ``model`` after supervised fine-tuning on the task: NLL of the data's
completions for ``method.initial.max_epochs`` epochs (``method.initial``: ``seed``, ``max_epochs``,
``batch_size``, ``optimizer``, ``evaluation``, ``model``, which is the run's ``model``). It is a cached
stage like a distillation teacher: the teacher cache trains it on first use
(:func:`~divergence_lab.methods.lm_kd.lm_teacher_recipe`) and every run of the same config and data loads
it. ``max_epochs: 0`` takes the model as ``model`` builds it (a saved model: ``model=lm_local``), untrained;
``from_run: <run folder>`` takes the tested network of a finished run instead (an ``lm_kd`` student, an
earlier ``rlvr`` policy: its ``checkpoints/best.ckpt``, else ``last.ckpt``), which must be the run's
``model``.

The policy starts from π₀; the reference of the divergence regulariser is π₀ frozen (``reference: init``),
the cached ``method.teacher`` (``reference: teacher``) or absent (``reference: none``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import PreTrainedModel

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.record_format import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    METRICS_FILE,
    SELECTED_CHECKPOINT,
)
from divergence_lab.methods.lm_kd import (
    causal_lm_for,
    check_language_model_data,
    check_shared_vocabulary,
    lm_teacher_recipe,
)
from divergence_lab.methods.stages import Stage, StageContext, StageOutput, cpu_state, network_from_state

INITIAL = "initial"  # the stage holding π₀'s weights
TEACHER = "teacher"  # the stage holding the teacher's weights (reference: teacher)
NETWORK_PREFIX = "model."  # a language-model method's trained network in its checkpoints' state dict


def reference_kind(method: DictConfig) -> str:
    """``method.reference``: ``init`` | ``teacher`` | ``none``, as the method's ``accepts:`` block declares
    and the pre-flight checks (``init`` where a method has no such key)."""
    return method.get("reference", "init")


def policy_stages(cfg: DictConfig, datamodule: Any) -> list[Stage]:
    """Stage ``initial`` (π₀, SFT on the run's data, cached) and, for ``reference: teacher``, stage
    ``teacher`` (the cached causal LM teacher of ``method.teacher``, which must share the data's tokenizer
    and the policy's vocabulary). Checks the data and the models first."""
    check_language_model_data(cfg, datamodule)
    method = cfg.method
    if reference_kind(method) == "teacher":
        check_shared_vocabulary(cfg, datamodule)

    def initial(context: StageContext) -> StageOutput:
        if method.initial.get("from_run"):
            return {"state": tested_network_state(method.initial.from_run, cfg.model, datamodule)}
        if method.initial.max_epochs == 0:
            return {"state": cpu_state(causal_lm_for(cfg.model, datamodule))}
        recipe = lm_teacher_recipe(cfg, context.fit_and_test, key="method.initial")
        return {"state": cpu_state(context.trained_teacher(method.initial, recipe))}

    def teacher(context: StageContext) -> StageOutput:
        recipe = lm_teacher_recipe(cfg, context.fit_and_test)
        return {"state": cpu_state(context.trained_teacher(method.teacher, recipe))}

    stages = [Stage(INITIAL, initial)]
    return [*stages, Stage(TEACHER, teacher)] if reference_kind(method) == "teacher" else stages


def tested_network_state(run_dir: str, model_cfg: DictConfig, datamodule: Any) -> dict[str, torch.Tensor]:
    """The weights of the network a finished run tested (its ``model.`` entries of ``best.ckpt``, else of
    ``last.ckpt``), checked against ``model_cfg``; refused in one line when the folder holds no finished run
    or a network of another shape."""
    folder = Path(run_dir)
    key = "method.initial.from_run"
    if not (folder / METRICS_FILE).is_file():
        raise ConfigError(f"{key}: {folder} holds no finished run (no {METRICS_FILE})")
    found = [folder / CHECKPOINT_DIR / name for name in (SELECTED_CHECKPOINT, LAST_CHECKPOINT)]
    checkpoint = next((path for path in found if path.is_file()), None)
    if checkpoint is None:
        raise ConfigError(f"{key}: {folder} keeps no checkpoint ({SELECTED_CHECKPOINT} or {LAST_CHECKPOINT})")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    weights = {
        name.removeprefix(NETWORK_PREFIX): t for name, t in state.items() if name.startswith(NETWORK_PREFIX)
    }
    net = causal_lm_for(model_cfg, datamodule)
    try:
        net.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ConfigError(f"{key}: the network in {checkpoint} is not this run's model ({first})") from None
    return cpu_state(net)


def initial_policy(cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]) -> PreTrainedModel:
    """A fresh copy of π₀ (the run's ``model`` with the ``initial`` stage's weights)."""
    return network_from_state(lambda: causal_lm_for(cfg.model, datamodule), outputs[INITIAL]["state"])


def frozen_reference(
    cfg: DictConfig, datamodule: Any, outputs: dict[str, StageOutput]
) -> PreTrainedModel | None:
    """The regulariser's reference, frozen and in eval mode: π₀, the teacher, or None."""
    kind = reference_kind(cfg.method)
    if kind == "none":
        return None
    if kind == "init":
        reference = initial_policy(cfg, datamodule, outputs)
    else:
        teacher_model = cfg.method.teacher.model
        reference = network_from_state(
            lambda: causal_lm_for(teacher_model, datamodule, "method.teacher.model"),
            outputs[TEACHER]["state"],
        )
    return reference.eval().requires_grad_(False)
