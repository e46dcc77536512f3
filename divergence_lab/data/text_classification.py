"""What the text-classification data modules share: the token layout of a batch, encoding, a local tokenizer.

A text example is one int64 tensor ``(3, max_length)`` whose rows are :data:`TOKEN_ROWS`: the token ids,
the attention mask (1 on tokens, 0 on padding) and the segment ids (0 for the first text, 1 for the second
of a pair), padded on the right to ``max_length``. A batch is ``(B, 3, max_length)``, what
:class:`divergence_lab.models.text_classifier.TextClassifier` takes as ``x``, so every method and the
teacher cache treat text like any other in-memory tensor data (:class:`TokenizedDataModule`).

Tokenizers are Transformers tokenizers: one read from a local folder (:func:`local_tokenizer`, nothing is
downloaded) or a word-level one trained here on the training texts (:func:`word_level_tokenizer`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from divergence_lab.data.tensor_datamodule import TensorDataModule
from divergence_lab.ground.errors import ConfigError

TOKEN_ROWS = ("input_ids", "attention_mask", "token_type_ids")
PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"


def encode(
    tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int
) -> torch.Tensor:
    """``(N, 3, max_length)`` int64: the :data:`TOKEN_ROWS` of each text (or text pair), with the tokenizer's
    special tokens, truncated (the longer text of a pair first) and right-padded to ``max_length`` (the
    tokenizer's padding side is set to the right: networks trim the padding columns at the end)."""
    tokenizer.padding_side = "right"
    encoded = tokenizer(
        list(texts),
        list(pairs) if pairs is not None else None,
        max_length=max_length,
        truncation=True,
        padding="max_length",
        return_attention_mask=True,
        return_token_type_ids=True,
        return_tensors="pt",
    )
    return torch.stack([encoded[row].long() for row in TOKEN_ROWS], dim=1)


def word_level_tokenizer(texts: Iterable[str]) -> Any:
    """A lower-casing, whitespace-splitting word-level tokenizer whose vocabulary is every word of ``texts``
    (ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3, then by decreasing frequency, ties in
    alphabetical order), with BERT's templates ``[CLS] a [SEP]`` and ``[CLS] a [SEP] b [SEP]``.

    Built with the ``tokenizers`` library and returned as a Transformers fast tokenizer (``save_pretrained``
    writes a folder that :func:`local_tokenizer` reads back).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(
        special_tokens=[PAD, UNK, CLS, SEP], min_frequency=1, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    special = [(token, tokenizer.token_to_id(token)) for token in (CLS, SEP)]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B:1 {SEP}:1", special_tokens=special
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, cls_token=CLS, sep_token=SEP
    )


def local_tokenizer(path: str | Path, key: str = "data.tokenizer") -> Any:
    """``AutoTokenizer.from_pretrained(path, local_files_only=True)``; a missing or unreadable folder is
    refused in one line naming ``key``."""
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}: no tokenizer folder at {folder} (a local folder saved by save_pretrained)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"{key}: cannot load a tokenizer from {folder}: {reason}") from None
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"{key}: the tokenizer at {folder} has no padding token (pad_token)")
    return tokenizer


def check_max_length(max_length: object) -> None:
    """``data.max_length``: an integer >= 2 (room for the special tokens around a text)."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"data.max_length must be an integer >= 2 (got {max_length!r})")


class TokenizedDataModule(TensorDataModule):
    """Tensor splits of token rows ``(N, 3, max_length)``; subclasses set ``self.tokenizer`` in
    :meth:`load_splits`. :meth:`network_arguments` tells a text network its vocabulary."""

    tokenizer: Any = None

    def network_arguments(self) -> dict[str, int]:
        """``{"vocab_size", "pad_token_id"}`` of the tokenizer, which a network built from a config needs
        (passed by :func:`divergence_lab.models.build_network`); call after :meth:`setup`."""
        return {"vocab_size": len(self.tokenizer), "pad_token_id": int(self.tokenizer.pad_token_id)}
