"""Seeded Gaussian-mixture classification: ``num_classes`` isotropic Gaussians in ``dim`` dimensions.

Class means are drawn once from ``N(0, I)`` and scaled so that the typical distance between two means is
``separation``; each example is its class mean plus ``N(0, I)`` noise. Smaller ``separation`` means more
overlap between classes (a harder task, softer teacher distributions). Everything is a function of
``data_seed``; ``seed`` only changes the batch order.
"""

from __future__ import annotations

import math

import torch

from divergence_lab.data.tensor_datamodule import TensorDataModule
from divergence_lab.ground.errors import ConfigError


class SyntheticDataModule(TensorDataModule):
    """A ``num_classes``-way mixture with ``samples_per_class`` train examples per class."""

    def __init__(
        self,
        num_classes: int = 10,
        dim: int = 32,
        separation: float = 4.0,
        samples_per_class: int = 100,
        val_per_class: int = 20,
        test_per_class: int = 50,
        data_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        seed: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, label_noise, noise_seed)
        checks = {
            "num_classes": (num_classes, 2),
            "dim": (dim, 1),
            "samples_per_class": (samples_per_class, 1),
            "val_per_class": (val_per_class, 1),
            "test_per_class": (test_per_class, 1),
        }
        for key, (value, minimum) in checks.items():
            if not isinstance(value, int) or value < minimum:
                raise ConfigError(f"data.{key} must be an integer >= {minimum} (got {value!r})")
        if separation <= 0:
            raise ConfigError(f"data.separation must be > 0 (got {separation})")
        self.num_classes_requested = num_classes
        self.dim = dim
        self.separation = separation
        self.counts = {"train": samples_per_class, "val": val_per_class, "test": test_per_class}
        self.data_seed = data_seed

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.data_seed)
        means = torch.randn(self.num_classes_requested, self.dim, generator=generator)
        # E||m_i - m_j|| ~= sqrt(2 * dim) for standard normal means: rescale to the requested separation.
        means *= self.separation / math.sqrt(2 * self.dim)
        splits = {}
        for split, per_class in self.counts.items():
            y = torch.arange(self.num_classes_requested).repeat_interleave(per_class)
            x = means[y] + torch.randn(len(y), self.dim, generator=generator)
            splits[split] = (x, y)
        return splits
