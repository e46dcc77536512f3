"""scikit-learn's bundled handwritten digits (1797 images, 8x8, 10 classes): the embedded default.

Pixels (0..16) are scaled to [0, 1]. The split is stratified and fixed by ``split_seed`` so that every
training seed of a sweep sees the same train/val/test examples; ``seed`` only changes the batch order.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from divergence_lab.data.tensor_datamodule import TensorDataModule, check_split_fractions, stratified_split


class DigitsDataModule(TensorDataModule):
    """Digits as ``(N, 1, 8, 8)`` float images, or ``(N, 64)`` vectors when ``flatten`` is set."""

    def __init__(
        self,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        flatten: bool = False,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        seed: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, label_noise, noise_seed)
        check_split_fractions(val_fraction, test_fraction)
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.flatten = flatten

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        if self.flatten:
            x = x.flatten(1)
        y = torch.tensor(bunch.target, dtype=torch.long)
        train, val, test = stratified_split(y, self.fractions, self.split_seed)
        return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": (x[test], y[test])}
