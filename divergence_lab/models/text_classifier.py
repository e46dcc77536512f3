"""Transformers sequence classifiers as plain networks: ``forward(x)`` on a batch of token rows gives logits.

``x`` is the ``(B, 3, L)`` int64 batch of the text data modules
(:mod:`divergence_lab.data.text_classification`): token ids, attention mask and segment ids. The forward
pass drops the padding columns that every example of the batch shares (right padding), then returns the
``(B, num_classes)`` logits of the wrapped ``AutoModelForSequenceClassification``. So the methods, the
evaluation and the teacher cache use these networks exactly as they use an MLP.

Two ``model`` configs (``conf/model/bert_*.yaml``):

* :class:`BertClassifier`: a randomly initialised BERT of the given sizes (``BertConfig``) for the data's
  vocabulary, with ``L`` (``data.max_length``) positions;
* :class:`PretrainedClassifier`: the model saved in the local folder ``path`` (``save_pretrained``), read
  with ``local_files_only=True`` (nothing is downloaded), with a classification head of ``num_classes``.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from divergence_lab.data.text_classification import TOKEN_ROWS
from divergence_lab.ground.errors import ConfigError

TEXT_DATA = "data=text_synthetic or data=glue"


def _text_length(in_shape: Sequence[int], vocab_size: int | None) -> int:
    """The padded length ``L`` of token rows of shape ``(3, L)``; other inputs are refused."""
    if vocab_size is None or len(in_shape) != 2 or in_shape[0] != len(TOKEN_ROWS):
        raise ConfigError(
            f"model: a text classifier needs token rows from a text data config ({TEXT_DATA}); "
            f"got inputs of shape {tuple(in_shape)}"
        )
    return int(in_shape[1])


class TextClassifier(nn.Module):
    """``forward(x)``: the logits of ``model`` for the token rows ``x`` ``(B, 3, L)``, padding trimmed."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.uses_segments = "token_type_ids" in inspect.signature(model.forward).parameters

    def forward(self, x: Tensor) -> Tensor:
        ids, mask, segments = x.unbind(1)
        length = max(int(mask.sum(1).max()), 1)  # right padding: later columns are padding everywhere
        inputs = {"input_ids": ids[:, :length], "attention_mask": mask[:, :length]}
        if self.uses_segments:
            inputs["token_type_ids"] = segments[:, :length]
        return self.model(**inputs).logits


class BertClassifier(TextClassifier):
    """A BERT encoder of ``layers`` × (``heads`` heads, width ``hidden``, feed-forward ``intermediate``) with
    a classification head, randomly initialised (``AutoModelForSequenceClassification.from_config``)."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        vocab_size: int | None = None,
        pad_token_id: int = 0,
        layers: int = 2,
        hidden: int = 64,
        heads: int = 4,
        intermediate: int = 128,
        dropout: float = 0.1,
    ) -> None:
        from transformers import AutoModelForSequenceClassification, BertConfig

        length = _text_length(in_shape, vocab_size)
        for key, value in (
            ("layers", layers),
            ("hidden", hidden),
            ("heads", heads),
            ("intermediate", intermediate),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{key} must be an integer >= 1 (got {value!r})")
        if hidden % heads:
            raise ConfigError(f"model.hidden={hidden} must be a multiple of model.heads={heads}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1) (got {dropout})")
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            max_position_embeddings=length,
            num_labels=num_classes,
            pad_token_id=pad_token_id,
        )
        super().__init__(AutoModelForSequenceClassification.from_config(config))


class PretrainedClassifier(TextClassifier):
    """The sequence classifier saved in the local folder ``path``, with a head of ``num_classes`` outputs.

    Its tokenizer must be the data's (``data.tokenizer``): a data vocabulary larger than the model's, or a
    ``data.max_length`` beyond its positions, is refused. The folder's files (names, sizes, modification
    times) are part of the network's ``repr``, so a teacher trained from it is retrained when they change.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        path: str,
        vocab_size: int | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        from transformers import AutoModelForSequenceClassification

        length = _text_length(in_shape, vocab_size)
        folder = Path(str(path)).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"model.path: no model at {folder} (a folder written by save_pretrained, with config.json; "
                "nothing is downloaded)"
            )
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(folder), local_files_only=True, num_labels=num_classes
            )
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            reason = " ".join(str(error).split())
            if "ignore_mismatched_sizes" in reason:
                reason = f"its classification head does not have the data's {num_classes} classes"
            raise ConfigError(
                f"model.path: {folder} holds no readable sequence classifier: {reason}"
            ) from None
        rows = model.get_input_embeddings().num_embeddings
        if rows < vocab_size:
            raise ConfigError(
                f"model.path: the model in {folder} embeds {rows} tokens but the data's tokenizer has "
                f"{vocab_size}: use the tokenizer saved with the model (data.tokenizer={folder})"
            )
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and positions < length:
            raise ConfigError(
                f"data.max_length={length} exceeds the {positions} positions of the model in {folder}"
            )
        if model.config.pad_token_id is None and pad_token_id is not None:
            model.config.pad_token_id = pad_token_id
        super().__init__(model)
        self.folder = folder
        self.files_digest = _folder_digest(folder)

    def extra_repr(self) -> str:
        return f"path={self.folder}, files={self.files_digest}"


def _folder_digest(folder: Path) -> str:
    """The first 16 hex digits of the SHA-256 of the folder's file names, sizes and modification times."""
    digest = hashlib.sha256()
    for file in sorted(item for item in folder.iterdir() if item.is_file()):
        stat = file.stat()
        digest.update(f"{file.name} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
