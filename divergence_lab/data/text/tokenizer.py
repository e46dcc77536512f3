"""Tokenizers for the language-model data: a character-level one built locally, or a user's saved folder.

Nothing is downloaded. :func:`build_char_tokenizer` makes one token per character of an alphabet, plus
four special tokens (ids in this order): ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3 (any
character outside the alphabet). Encoding a text with ``add_special_tokens=True`` (the default) puts
``<bos>`` in front and nothing behind: the data modules append ``<eos>`` to completions themselves.

Padding side: the tokenizer pads on the **left** (``padding_side="left"``), which is what batched causal
generation needs (every prompt then ends at the last position, where generation continues). Training
batches are padded on the right by the data module's own collation, not by the tokenizer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from hydra.utils import to_absolute_path
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from divergence_lab.ground.errors import ConfigError

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
GENERATION_PADDING_SIDE = "left"
ANY_CHARACTER = r"[\s\S]"  # one character, newlines included


def build_char_tokenizer(alphabet: str, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over the distinct characters of ``alphabet`` (in first-seen order).

    Ids: the four special tokens first (``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, ``<unk>`` 3), then one id
    per character. Decoding concatenates characters (no spaces inserted). It saves with
    ``save_pretrained(folder)`` and loads back with ``AutoTokenizer.from_pretrained(folder,
    local_files_only=True)``.
    """
    if not alphabet:
        raise ConfigError("a character tokenizer needs a non-empty alphabet")
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for character in alphabet:
        vocab.setdefault(character, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(ANY_CHARACTER), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side=GENERATION_PADDING_SIDE,
        **extra,
    )


def load_tokenizer(path: str | Path, key: str = "data.tokenizer") -> PreTrainedTokenizerBase:
    """The tokenizer saved in the local folder ``path`` (``save_pretrained``), never downloaded.

    A relative path is resolved against the directory ``dlab`` was started from. The tokenizer must have
    an end-of-sequence token; one without a padding token pads with its end-of-sequence token (padding
    is masked by the attention mask, so the choice of id does not matter). It pads on the left, as
    :func:`build_char_tokenizer`. Anything wrong is one line naming ``key``.
    """
    folder = Path(to_absolute_path(str(Path(path).expanduser())))
    if not folder.is_dir():
        raise ConfigError(
            f"{key}: no tokenizer folder at {folder} (expected a folder written by save_pretrained)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = " ".join(str(error).split())
        raise ConfigError(
            f"{key}: {folder} holds no readable tokenizer: {type(error).__name__}: {reason}"
        ) from None
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"{key}: the tokenizer in {folder} has no end-of-sequence token (eos_token)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = GENERATION_PADDING_SIDE
    return tokenizer


def decode_completion(tokenizer: PreTrainedTokenizerBase, token_ids: Sequence[int]) -> str:
    """The text of generated ``token_ids``: the ids before the first end-of-sequence token, decoded
    without special tokens (what follows an eos, e.g. the padding of a finished sequence, is dropped)."""
    ids = [int(token) for token in token_ids]
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 (hex digest) of what decides the ids: the full serialised tokenizer when it has a fast
    backend (vocabulary, merges, normalisation, special tokens), else its vocabulary and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        text = repr((sorted(tokenizer.get_vocab().items()), tokenizer.all_special_tokens))
    return hashlib.sha256(f"{type(tokenizer).__qualname__}\n{text}".encode()).hexdigest()
