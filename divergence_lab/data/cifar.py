"""CIFAR-10 / CIFAR-100 read from disk in the standard "python version" format (no download).

Expected layout under ``data_dir`` (as distributed at https://www.cs.toronto.edu/~kriz/cifar.html)::

    cifar-10-batches-py/   data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Each file is a pickled dict with ``data`` (uint8, N x 3072, channel-planar R, G, B planes of 32 x 32) and
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). A small reader replaces torchvision's (which also
md5-checks every file). Images are normalised with the training split's per-channel mean and std; a
stratified part of the training set (``val_fraction``) is held out for validation; the official test
set is the test split. Training batches are augmented on the device with the standard random crop
(4-pixel zero padding) and horizontal flip.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from divergence_lab.data.tensor_datamodule import TensorDataModule, stratified_split

LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels"),
}


def _unpickle(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        raw = pickle.load(handle, encoding="bytes")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def read_cifar(data_dir: str | Path, variant: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (uint8 images N x 3 x 32 x 32, int64 labels), "test": (...)}`` from the pickled files."""
    if variant not in LAYOUT:
        raise ValueError(f"data.variant must be one of {', '.join(LAYOUT)} (got {variant!r})")
    folder, train_files, test_file, label_key = LAYOUT[variant]
    root = Path(data_dir) / folder
    missing = [name for name in [*train_files, test_file] if not (root / name).is_file()]
    if missing:
        raise ValueError(
            f"data.data_dir: {variant} not found, expected {root}/{{{', '.join(missing)}}} "
            "(the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html, extracted)"
        )
    splits = {}
    for split, names in (("train", train_files), ("test", [test_file])):
        parts = [_unpickle(root / name) for name in names]
        images = torch.cat([torch.as_tensor(p["data"], dtype=torch.uint8) for p in parts])
        labels = torch.cat([torch.as_tensor(p[label_key], dtype=torch.long) for p in parts])
        splits[split] = (images.view(-1, 3, 32, 32), labels)
    return splits


def random_crop_flip(images: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Per-image random ``padding``-pixel shift (zero padding) and horizontal flip of a batch (N, C, H, W)."""
    n, channels, height, width = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    offset_y = torch.randint(0, 2 * padding + 1, (n,), device=device)
    offset_x = torch.randint(0, 2 * padding + 1, (n,), device=device)
    rows = (offset_y[:, None] + torch.arange(height, device=device))[:, None, :, None]
    cols = (offset_x[:, None] + torch.arange(width, device=device))[:, None, None, :]
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(channels, device=device)[None, :, None, None]
    cropped = padded[batch, channel, rows, cols]
    flip = torch.rand(n, device=device) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)


class CIFARDataModule(TensorDataModule):
    """CIFAR-10/100 from ``data_dir``; see the module docstring."""

    def __init__(
        self,
        data_dir: str = "data",
        variant: str = "cifar10",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        augment: bool = True,
        batch_size: int = 128,
        eval_batch_size: int = 512,
        seed: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, label_noise, noise_seed)
        if variant not in LAYOUT:
            raise ValueError(f"data.variant must be one of {', '.join(LAYOUT)} (got {variant!r})")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be in (0, 1) (got {val_fraction})")
        self.data_dir = data_dir
        self.variant = variant
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.augment = augment

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raw = read_cifar(self.data_dir, self.variant)
        images, labels = raw["train"]
        train, val, _ = stratified_split(labels, (self.val_fraction, 0.0), self.split_seed)
        pixels = images[train].float() / 255.0
        mean, std = pixels.mean(dim=(0, 2, 3), keepdim=True), pixels.std(dim=(0, 2, 3), keepdim=True)

        def normalise(x: torch.Tensor) -> torch.Tensor:
            return (x.float() / 255.0 - mean) / std

        test_images, test_labels = raw["test"]
        return {
            "train": (normalise(images[train]), labels[train]),
            "val": (normalise(images[val]), labels[val]),
            "test": (normalise(test_images), test_labels),
        }

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = getattr(self, "trainer", None)
        if self.augment and trainer is not None and trainer.training:
            images, labels = batch
            return random_crop_flip(images), labels
        return batch
