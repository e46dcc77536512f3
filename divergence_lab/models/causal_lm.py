"""Causal language models (Hugging Face ``transformers``), built from a config or read from a local folder.

Two kinds of ``model`` config (``conf/model/lm_*.yaml``), both instantiated by :func:`build_causal_lm` for
the data's vocabulary and special tokens:

* ``_target_: divergence_lab.models.causal_lm.causal_lm_from_config``: a randomly initialised model of
  ``model_type`` (any ``transformers`` model type with a causal-LM head: ``gpt2``, ``llama`` ...) whose
  ``sizes`` are that model config's own keys (``n_layer``, ``n_embd``, ``n_head`` for GPT-2); its
  vocabulary is the data's;
* ``_target_: divergence_lab.models.causal_lm.causal_lm_from_path``: the model saved in the local folder
  ``path`` (``save_pretrained``), read with ``local_files_only=True``: nothing is ever downloaded.

Every refusal is one line naming the config key (``model.sizes``, ``model.path`` ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.targets import instantiate_target

# config keys that would make the logits differ from hidden @ lm_head.weightᵀ (+ bias)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale")


def build_causal_lm(
    model_cfg: DictConfig,
    vocab_size: int,
    pad_token_id: int,
    eos_token_id: int,
    bos_token_id: int | None = None,
    key: str = "model",
) -> PreTrainedModel:
    """The causal LM of a ``model`` config (see the module docstring) for a vocabulary of ``vocab_size`` ids
    with these special tokens; ``key`` names the config in refusals (``method.teacher.model``)."""
    tokens = {"pad_token_id": pad_token_id, "eos_token_id": eos_token_id, "bos_token_id": bos_token_id}
    try:
        return instantiate_target(model_cfg, key, vocab_size=vocab_size, **tokens)
    except ConfigError as error:
        message = str(error)
        raise ConfigError(message if message.startswith(f"{key}.") else f"{key}.{message}") from None


def causal_lm_from_config(
    model_type: str,
    sizes: dict[str, Any],
    vocab_size: int,
    pad_token_id: int,
    eos_token_id: int,
    bos_token_id: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised ``AutoModelForCausalLM`` of ``AutoConfig.for_model(model_type, **sizes)``
    with ``vocab_size`` output tokens and the data's special token ids."""
    sizes = OmegaConf.to_container(sizes) if isinstance(sizes, DictConfig) else dict(sizes or {})
    try:
        config_class = type(AutoConfig.for_model(model_type))
    except ValueError:
        raise ConfigError(
            f"model_type: unknown transformers model type {model_type!r} (e.g. gpt2, llama)"
        ) from None
    known = set(config_class().to_dict()) | set(getattr(config_class, "attribute_map", {}))
    unknown = sorted(set(sizes) - known)
    if unknown:
        raise ConfigError(f"sizes: {', '.join(unknown)} not a setting of a {model_type} config")
    tokens = {"pad_token_id": pad_token_id, "eos_token_id": eos_token_id, "bos_token_id": bos_token_id}
    try:
        config = AutoConfig.for_model(model_type, **sizes, vocab_size=vocab_size, **tokens)
        return AutoModelForCausalLM.from_config(config)
    except (ValueError, TypeError, AssertionError) as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"sizes: a {model_type} model refuses {sizes}: {reason}") from None


def causal_lm_from_path(
    path: str,
    vocab_size: int,
    pad_token_id: int,
    eos_token_id: int,
    bos_token_id: int | None = None,
) -> PreTrainedModel:
    """The model saved in the local folder ``path`` (relative: to the launch directory), which must have
    at least ``vocab_size`` output tokens; a missing ``pad_token_id`` becomes the data's (for generation)."""
    folder = local_model_folder(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"path: {folder} holds no readable causal LM: {reason}") from None
    if (size := output_vocabulary(model)) < vocab_size:
        raise ConfigError(
            f"path: the model in {folder} has {size} output tokens but the data's tokenizer has "
            f"{vocab_size}: use the tokenizer saved with the model (data.tokenizer={folder})"
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    return model


def local_model_folder(path: str | None) -> Path:
    """The existing folder ``path`` (``~`` expanded, relative to the launch directory), else a refusal."""
    if path is None:
        raise ConfigError("path: set the folder of a model saved with save_pretrained")
    folder = Path(to_absolute_path(str(Path(path).expanduser())))
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"path: no model at {folder} (expected a folder written by save_pretrained, with config.json; "
            "nothing is downloaded)"
        )
    return folder


def local_model_config(path: str) -> PretrainedConfig:
    """The ``config.json`` of a saved model, read without its weights."""
    return AutoConfig.from_pretrained(str(local_model_folder(path)), local_files_only=True)


def output_vocabulary(model: PreTrainedModel) -> int:
    """How many tokens the model scores: the rows of its output projection."""
    return int(model.get_output_embeddings().weight.shape[0])


def plain_output_projection(model: PreTrainedModel) -> bool:
    """Whether the logits are exactly ``last hidden state @ lm_head.weightᵀ (+ bias)`` (no soft-capping or
    scaling of the logits), as a fused linear divergence assumes."""
    return all(getattr(model.config, name, None) in (None, 1.0) for name in LOGIT_TRANSFORMS)
