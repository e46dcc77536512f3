"""A LightningDataModule over in-memory tensors, with deterministic, resumable shuffling.

Every dataset here is small enough to live in memory as tensors. The training order is a function of
``(seed, epoch)`` only: the loader gets its own ``torch.Generator`` re-seeded at each epoch, so a run
resumed from an end-of-epoch checkpoint sees exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from divergence_lab.ground.errors import ConfigError


class EpochSeededSampler(Sampler[int]):
    """Random permutation of ``range(n)`` drawn from ``hash(seed, epoch)``; ``set_epoch`` advances it."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        """This epoch's generator: a function of ``(seed, epoch)`` only."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def __iter__(self):
        return iter(torch.randperm(self.n, generator=self.generator()).tolist())

    def __len__(self) -> int:
        return self.n


class GatheredTensorDataset(TensorDataset):
    """A ``TensorDataset`` whose DataLoader batches are one gather per tensor, ``tensor[indices]``, instead of
    one indexing per example and a stack — the same batch, bit for bit, in a fifth of the time (64 digits
    examples: 0.13 ms against 0.67 ms). A DataLoader hands the batch's indices to ``__getitems__``; give it
    ``collate_fn=gathered_batch``."""

    def __getitems__(self, indices: list[int]) -> list[Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return [tensor[index] for tensor in self.tensors]


def gathered_batch(batch: list[Tensor]) -> list[Tensor]:
    """The collate function of a :class:`GatheredTensorDataset` loader: the batch is already gathered."""
    return batch


class TensorDataModule(L.LightningDataModule):
    """Train/val/test splits held as tensors ``(x, y)``; subclasses implement :meth:`load_splits`.

    Attributes set by :meth:`setup`: ``input_shape`` (shape of one example) and ``num_classes``.
    """

    def __init__(
        self,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        seed: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be an integer >= 1 (got {batch_size})")
        if not 0.0 <= label_noise < 1.0:
            raise ConfigError(f"data.label_noise must be in [0, 1) (got {label_noise})")
        self.label_noise = label_noise
        self.noise_seed = noise_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.splits: dict[str, GatheredTensorDataset] = {}

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Return ``{"train": (x, y), "val": (x, y), "test": (x, y)}``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.load_splits()
        self.input_shape = tuple(splits["train"][0].shape[1:])
        self.num_classes = int(max(int(y.max()) for _, y in splits.values() if len(y)) + 1)
        if self.label_noise > 0:
            x_train, y_train = splits["train"]
            noisy = symmetric_label_noise(y_train, self.label_noise, self.num_classes, self.noise_seed)
            splits["train"] = (x_train, noisy)
        self.splits = {name: GatheredTensorDataset(x, y) for name, (x, y) in splits.items()}

    def data_fingerprint(self) -> str:
        """SHA-256 (hex digest) of the data this module serves, for the teacher cache's key.

        Contract, for every data module: call it after :meth:`setup`; it identifies the dataset (its
        class), the split and the examples and labels served, so that a change of any of them changes
        the digest; it costs far less than an epoch of training. (The cache hashes the module's source
        code separately.) Here, for in-memory tensors: the class, then every split's name and tensors
        (dtype, shape and bytes; training labels after label noise). Val and test are hashed too, as the
        accuracy stored with a teacher is measured on them.
        """
        digest = hashlib.sha256(class_path(self).encode())
        for name in sorted(self.splits):
            digest.update(name.encode())
            for tensor in self.splits[name].tensors:
                digest.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
                digest.update(tensor.contiguous().numpy())
        return digest.hexdigest()

    def train_inputs(self) -> torch.Tensor:
        """The training inputs ``(N_train, *input_shape)`` in dataset order (the storage, not a copy)."""
        return self.splits["train"].tensors[0]

    def augment_training_batch(self, batch: Any) -> Any:
        """A training batch as training sees it, on its device: the data's augmentation (none here)."""
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning's hook: training batches go through :meth:`augment_training_batch`, others unchanged."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            return self.augment_training_batch(batch)
        return batch

    def train_dataloader(self) -> DataLoader:
        dataset = self.splits["train"]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochSeededSampler(len(dataset), self.seed),
            generator=torch.Generator().manual_seed(self.seed),
            collate_fn=gathered_batch,
        )

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.splits[split], batch_size=self.eval_batch_size, shuffle=False, collate_fn=gathered_batch
        )

    @property
    def has_validation_split(self) -> bool:
        """Whether the validation split holds any example (``val_fraction = 0`` holds out none)."""
        return len(self.splits["val"]) > 0

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


def class_path(obj: Any) -> str:
    """``module.QualifiedName`` of ``obj``'s class: which dataset a data fingerprint describes."""
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def fingerprint_of(payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex digest) of a JSON-serialisable ``payload``, keys sorted: equal payloads, equal digests."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def symmetric_label_noise(y: torch.Tensor, rate: float, num_classes: int, seed: int) -> torch.Tensor:
    """A copy of ``y`` where a ``rate`` fraction of labels (exactly ``round(rate * N)``) is replaced by a
    different class drawn uniformly; only the training labels are ever corrupted."""
    generator = torch.Generator().manual_seed(seed)
    flipped = torch.randperm(len(y), generator=generator)[: round(rate * len(y))]
    shift = torch.randint(1, num_classes, (len(flipped),), generator=generator)
    noisy = y.clone()
    noisy[flipped] = (y[flipped] + shift) % num_classes
    return noisy


def check_split_fractions(val_fraction: object, test_fraction: object) -> None:
    """Refuse ``data.val_fraction`` / ``data.test_fraction`` outside (0, 1), or summing to 1 or more."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ConfigError(f"data.{key} must be in (0, 1) (got {value!r})")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError("data.val_fraction + data.test_fraction must be < 1")


def stratified_split(
    y: torch.Tensor, fractions: tuple[float, float], seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices of a train/val/test split that keeps class proportions; ``fractions`` = (val, test)."""
    val_fraction, test_fraction = fractions
    generator = torch.Generator().manual_seed(seed)
    parts: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] = ([], [], [])
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_val = round(val_fraction * len(members))
        n_test = round(test_fraction * len(members))
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    return tuple(torch.sort(torch.cat(p)).values for p in parts)  # type: ignore[return-value]
