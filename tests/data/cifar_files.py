"""Tiny CIFAR files in the real on-disk format (pickled dicts with bytes keys, as the archives hold)."""

import pickle
from pathlib import Path

import numpy as np


def _dump(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=2)


def write_fake_cifar(root: Path, variant: str, per_class: int = 3, test_per_class: int = 1) -> np.ndarray:
    """Write ``root/<cifar folder>``; returns the training images (N, 3072) in file order."""
    rng = np.random.default_rng(0)
    classes = 10 if variant == "cifar10" else 100
    labels = np.repeat(np.arange(classes), per_class)
    images = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    test_labels = np.repeat(np.arange(classes), test_per_class)
    test_images = rng.integers(0, 256, size=(len(test_labels), 3072), dtype=np.uint8)
    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        for i, part in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
            _dump(folder / f"data_batch_{i}", {b"data": images[part], b"labels": labels[part].tolist()})
        _dump(folder / "test_batch", {b"data": test_images, b"labels": test_labels.tolist()})
        _dump(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    else:
        folder = root / "cifar-100-python"
        _dump(
            folder / "train",
            {b"data": images, b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist()},
        )
        _dump(
            folder / "test",
            {
                b"data": test_images,
                b"fine_labels": test_labels.tolist(),
                b"coarse_labels": (test_labels // 5).tolist(),
            },
        )
        _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    return images
