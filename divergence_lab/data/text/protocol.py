"""What a language-model method may rely on from a text data module (``conf/data/lm_*.yaml``).

Every ``lm_*`` config builds (through :func:`divergence_lab.data.instantiate_datamodule`) a set-up
:class:`~divergence_lab.data.text.lm_datamodule.CausalLMDataModule`, which satisfies
:class:`LanguageModelData`; the batches and prompts are documented in that module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor
from torch.utils.data import DataLoader

from divergence_lab.data.text.rows import EvalPrompt


@runtime_checkable
class LanguageModelData(Protocol):
    """Prompt/completion text for a causal language model, as methods and the run layer see it.

    Attributes (set by :meth:`setup`): ``tokenizer`` (a ``transformers`` tokenizer, padding on the left),
    ``vocab_size``, ``pad_token_id``, ``eos_token_id``, ``max_new_tokens`` (enough new tokens for any
    completion of the data, its eos included).
    """

    tokenizer: Any
    vocab_size: int
    pad_token_id: int
    eos_token_id: int
    max_new_tokens: int

    def setup(self, stage: str | None = None) -> None: ...

    def train_dataloader(self) -> DataLoader:
        """Dicts ``input_ids`` / ``attention_mask`` / ``labels`` (int64 ``(B, L)``, right-padded; labels
        -100 except on completion tokens and eos), order a function of ``(seed, epoch)``."""
        ...

    def val_dataloader(self) -> DataLoader:
        """Teacher-forced batches of the validation rows (as training batches), in a fixed order."""
        ...

    def test_dataloader(self) -> DataLoader:
        """Teacher-forced batches of the test rows, in a fixed order."""
        ...

    def eval_prompts(self, split: str) -> list[EvalPrompt]:
        """The distinct prompts of ``split`` (``val`` or ``test``) with their token ids and answers."""
        ...

    def generation_batch(self, prompts: Sequence[EvalPrompt]) -> dict[str, Tensor]:
        """Left-padded ``input_ids`` and ``attention_mask`` of ``prompts``, for batched generation."""
        ...

    def data_fingerprint(self) -> str:
        """A SHA-256 hex digest of the data served (source and tokenizer), for the teacher cache."""
        ...
