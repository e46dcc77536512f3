"""Generalized category discovery (GCD) data: a labelled dataset turned into the GCD setting.

From the training split of a base data module (``digits``, ``synthetic``, ``cifar10``/``cifar100``):

* the known classes are the first ``num_known`` class indices, the others are novel;
* a ``labelled_fraction`` of each known class's training images is labelled (stratified, fixed by
  ``split_seed``);
* the unlabelled set ``D_u`` holds the rest of the known-class images plus every novel-class image.

Training batches are ``(view1, view2, y, labelled)``: two augmented views of each image, the label where
the image is labelled and ``-1`` elsewhere (unlabelled labels never reach the training step). With
``balanced_sampling`` (default, the official SimGCD / LegoGCD loader) an epoch is ``n`` draws with
replacement, labelled images weighted 1 and unlabelled ones ``n_l / n_u``, so each half of the expected
batch is labelled; incomplete last batches are dropped. Otherwise an epoch is a random permutation. Validation
and test both evaluate on ``D_u`` with its true labels: the GCD protocol is transductive, the number
reported is clustering accuracy on the unlabelled training images.

Augmentations (``augment``), drawn from the global RNG (re-seeded per epoch, so runs resume exactly):
``digits`` = random shift by up to 1 pixel, Gaussian noise (σ = 0.1) and erasing of one 2×2 patch;
``crop_flip`` = 4-pixel random crop and horizontal flip (CIFAR); ``noise`` = Gaussian noise only (vectors).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from divergence_lab.data.cifar import random_crop_flip
from divergence_lab.data.tensor_datamodule import EpochSeededSampler, class_path, fingerprint_of
from divergence_lab.ground.errors import ConfigError

AUGMENTATIONS = ("digits", "crop_flip", "noise")


def gcd_split(
    y: torch.Tensor, num_known: int, labelled_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks ``(labelled, unlabelled)`` over training labels ``y``: they partition the set, the
    labelled part holds only known classes (``y < num_known``), ``round(fraction * n_c)`` images per class."""
    generator = torch.Generator().manual_seed(seed)
    labelled = torch.zeros(len(y), dtype=torch.bool)
    for label in range(num_known):
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        labelled[members[: round(labelled_fraction * len(members))]] = True
    return labelled, ~labelled


class BalancedEpochSampler(EpochSeededSampler):
    """``n`` indices drawn with replacement, ``P(i) ∝ 1`` for labelled images and ``n_l / n_u`` for unlabelled
    ones (labelled and unlabelled each carry half the mass), from the generator of ``(seed, epoch)``."""

    def __init__(self, labelled: torch.Tensor, seed: int) -> None:
        super().__init__(len(labelled), seed)
        count_labelled = int(labelled.sum())
        count_unlabelled = len(labelled) - count_labelled
        self.weights = torch.where(labelled, 1.0, count_labelled / max(count_unlabelled, 1)).double()

    def __iter__(self):
        draws = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator())
        return iter(draws.tolist())


def shift_noise_erase(images: torch.Tensor, noise: float = 0.1, patch: int = 2) -> torch.Tensor:
    """Digits augmentation of a batch (N, C, H, W): shift by -1..1 pixels, add noise, erase one patch."""
    n, _, height, width = images.shape
    on = {"device": images.device}
    padded = F.pad(images, (1, 1, 1, 1))
    dy, dx = torch.randint(0, 3, (n,), **on), torch.randint(0, 3, (n,), **on)
    rows = (dy[:, None] + torch.arange(height, **on)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, **on)[None, :])[:, None, None, :]
    batch = torch.arange(n, **on)[:, None, None, None]
    channels = torch.arange(images.shape[1], **on)[None, :, None, None]
    shifted = padded[batch, channels, rows, cols]
    noisy = shifted + noise * torch.randn_like(shifted)
    top = torch.randint(0, height - patch + 1, (n,), **on)
    left = torch.randint(0, width - patch + 1, (n,), **on)
    ys, xs = torch.arange(height, **on)[None, :], torch.arange(width, **on)[None, :]
    y_in = (ys >= top[:, None]) & (ys < top[:, None] + patch)
    x_in = (xs >= left[:, None]) & (xs < left[:, None] + patch)
    erase = (y_in[:, :, None] & x_in[:, None, :])[:, None]
    return noisy.masked_fill(erase, 0.0)


def augment(images: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "digits":
        return shift_noise_erase(images)
    if kind == "crop_flip":
        return random_crop_flip(images)
    return images + 0.1 * images.std() * torch.randn_like(images)


class GCDDataModule(L.LightningDataModule):
    """The GCD view of ``base`` (an instantiated data module); see the module docstring."""

    def __init__(
        self,
        base: Any,
        num_known: int = 5,
        labelled_fraction: float = 0.5,
        split_seed: int = 0,
        augment: str = "digits",
        batch_size: int = 128,
        eval_batch_size: int = 512,
        seed: int = 0,
        balanced_sampling: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < labelled_fraction < 1.0:
            raise ConfigError(f"data.labelled_fraction must be in (0, 1) (got {labelled_fraction})")
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"data.augment must be one of {', '.join(AUGMENTATIONS)} (got {augment!r})")
        if not isinstance(balanced_sampling, bool):
            raise ConfigError(f"data.balanced_sampling must be true or false (got {balanced_sampling!r})")
        if batch_size < 2:
            raise ConfigError(f"data.batch_size must be an integer >= 2 (got {batch_size})")
        self.base = base
        self.num_known = num_known
        self.labelled_fraction = labelled_fraction
        self.split_seed = split_seed
        self.augment_kind = augment
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.balanced_sampling = balanced_sampling
        self.train_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.base.setup()
        x, y = self.base.splits["train"].tensors
        self.num_classes = self.base.num_classes
        self.input_shape = tuple(x.shape[1:])
        if not 0 < self.num_known < self.num_classes:
            raise ConfigError(
                f"data.num_known must be in [1, {self.num_classes - 1}] for {self.num_classes} classes "
                f"(got {self.num_known})"
            )
        self.labelled, self.unlabelled = gcd_split(y, self.num_known, self.labelled_fraction, self.split_seed)
        visible = torch.where(self.labelled, y, torch.full_like(y, -1))
        self.train_set = TensorDataset(x, visible, self.labelled)
        self.unlabelled_set = TensorDataset(x[self.unlabelled], y[self.unlabelled])

    def data_fingerprint(self) -> str:
        """See :meth:`TensorDataModule.data_fingerprint`: the base module's fingerprint plus which classes
        are known and which training images are labelled (their parameters fix the masks)."""
        return fingerprint_of(
            {
                "dataset": class_path(self),
                "base": self.base.data_fingerprint(),
                "split": [self.num_known, self.labelled_fraction, self.split_seed],
            }
        )

    def train_inputs(self) -> torch.Tensor:
        """Every training image (labelled and unlabelled, un-augmented) in dataset order: the base
        module's training inputs (the storage, not a copy)."""
        assert self.train_set is not None
        return self.train_set.tensors[0]

    def two_views(self, batch: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
        x, y, labelled = (torch.stack(column) for column in zip(*batch, strict=True))
        return augment(x, self.augment_kind), augment(x, self.augment_kind), y, labelled

    def augment_training_batch(self, batch: Any) -> Any:
        """The batch as it is: its two views were augmented when it was gathered (:meth:`two_views`)."""
        return batch

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        if self.balanced_sampling:
            sampler: EpochSeededSampler = BalancedEpochSampler(self.labelled, self.seed)
        else:
            sampler = EpochSeededSampler(len(self.train_set), self.seed)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=self.balanced_sampling,
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=self.two_views,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.unlabelled_set, batch_size=self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
