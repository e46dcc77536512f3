"""Collation of tokenized examples into padded tensors.

Training and teacher-forced batches are padded on the **right**; prompts for batched generation on the
**left**, so that every prompt ends at the last position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100  # label of a position without loss (prompt and padding), as torch's cross-entropy skips

EncodedExample = tuple[list[int], int]  # (token ids: prompt then completion then eos, prompt length)


def right_padded_batch(examples: Sequence[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels``, int64 ``(B, L)`` with ``L`` the longest example.

    ``labels`` equal ``input_ids`` on completion tokens (the eos included) and are :data:`IGNORE_INDEX`
    on prompt and padding positions. They are aligned with ``input_ids`` (the token at position ``t`` is
    predicted from positions ``< t``: shift by one before the loss, as Hugging Face causal models do).
    """
    length = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    for row, (ids, prompt_length) in enumerate(examples):
        tokens = torch.tensor(ids, dtype=torch.long)
        input_ids[row, : len(ids)] = tokens
        attention_mask[row, : len(ids)] = 1
        labels[row, prompt_length : len(ids)] = tokens[prompt_length:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def left_padded_prompts(prompt_ids: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask``, int64 ``(B, L)``: the prompts padded on the left."""
    length = max(len(ids) for ids in prompt_ids)
    input_ids = torch.full((len(prompt_ids), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompt_ids), length), dtype=torch.long)
    for row, ids in enumerate(prompt_ids):
        if ids:
            input_ids[row, -len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            attention_mask[row, -len(ids) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}
