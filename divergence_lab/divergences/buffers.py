"""Reused CPU gradient buffers: the fused path's (N, C) gradient without fresh memory every step.

A fresh CPU tensor is fresh pages from the operating system: writing a new 4096 × 32000 float32 gradient
costs 0.19 s of page faults against 0.03 s for the same bytes in touched memory — a third of a fused kl
step. :func:`gradient_buffer` hands out a view of one flat buffer per dtype instead, grown to the largest
size asked for, but only while nothing else holds its storage: once the previous step's gradient has been
consumed and dropped. A gradient still referenced — kept as a leaf's accumulating ``.grad``, by a hook,
or by a graph kept for a second backward — keeps the buffer busy, and a fresh tensor is allocated instead,
so a reused buffer never overwrites a gradient anyone can still read. CUDA tensors always come fresh
(PyTorch's caching allocator already reuses their memory).

The buffer stays allocated between steps (one gradient's worth of memory); :func:`release_gradient_buffers`
frees it.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

_buffers: dict[torch.dtype, Tensor] = {}
_lock = threading.Lock()


def _storage_references(tensor: Tensor) -> int:
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


#: the count of a storage only the buffer itself holds (the probe's own temporary storage object included)
_UNSHARED = _storage_references(torch.empty(1))


def gradient_buffer(like: Tensor) -> Tensor:
    """An uninitialised contiguous tensor shaped and typed like ``like``: a view of this process's reused
    buffer when that buffer is free, else a fresh tensor."""
    if like.device.type != "cpu":
        return torch.empty_like(like, memory_format=torch.contiguous_format)
    with _lock:
        buffer = _buffers.get(like.dtype)
        if buffer is None or buffer.numel() < like.numel():
            buffer = torch.empty(like.numel(), dtype=like.dtype)
            _buffers[like.dtype] = buffer
        elif _storage_references(buffer) != _UNSHARED:
            return torch.empty_like(like, memory_format=torch.contiguous_format)
        return buffer[: like.numel()].view(like.shape)


def release_gradient_buffers() -> None:
    """Free the reused buffers (a later call allocates afresh)."""
    with _lock:
        _buffers.clear()
