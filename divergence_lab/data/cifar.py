"""CIFAR-10 / CIFAR-100 read from disk in the standard "python version" format (no download).

Expected layout under ``data_dir`` (as distributed at https://www.cs.toronto.edu/~kriz/cifar.html)::

    cifar-10-batches-py/   data_batch_1 ... data_batch_5, test_batch, batches.meta
    cifar-100-python/      train, test, meta

Each file is a pickled dict with ``data`` (uint8, N x 3072, channel-planar R, G, B planes of 32 x 32) and
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). A small reader replaces torchvision's (which also
md5-checks every file). Images are normalised with the training split's per-channel mean and std; a
stratified part of the training set (``val_fraction``) is held out for validation (none with
``val_fraction = 0``: ``protocol=full_train_last_epoch``, or the GCD protocol); the official test set is the
test split. Training batches are augmented on the device with the standard random crop
(4-pixel zero padding) and horizontal flip.

A missing, truncated, corrupt or wrong-format file is refused with a one-line ``ValueError`` that starts
with ``data.data_dir:`` and names the file and what was expected (the pipeline shows it as a config error).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from divergence_lab.data.tensor_datamodule import (
    TensorDataModule,
    class_path,
    fingerprint_of,
    stratified_split,
)
from divergence_lab.ground.errors import ConfigError

CHANNELS, SIDE = 3, 32
ROW_BYTES = CHANNELS * SIDE * SIDE  # one image: the R, G and B planes of 32 x 32 bytes


class Layout(NamedTuple):
    """Where a CIFAR variant's files are under ``data_dir`` and what each holds."""

    folder: str
    train_files: list[str]
    test_file: str
    label_key: str
    classes: int
    title: str  # what one file is, for error messages


LAYOUT = {
    "cifar10": Layout(
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        "test_batch",
        "labels",
        10,
        "CIFAR-10 batch",
    ),
    "cifar100": Layout("cifar-100-python", ["train"], "test", "fine_labels", 100, "CIFAR-100 file"),
}

# what unpickling a corrupt file raises, besides UnpicklingError (random bytes can decode as any opcode)
UNPICKLING_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    MemoryError,
    OverflowError,
    RecursionError,
)


def _unpickle(path: Path) -> Any:
    with path.open("rb") as handle:
        return pickle.load(handle, encoding="bytes")


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _refuse(path: Path, layout: Layout, reason: str) -> ConfigError:
    """The one-line error for a file that is not a CIFAR file of ``layout``."""
    expected = (
        f"a pickled dict with 'data' uint8 (n, {ROW_BYTES}) and '{layout.label_key}' "
        f"(n integers in 0..{layout.classes - 1})"
    )
    return ConfigError(f"data.data_dir: {path} is not a {layout.title} ({expected}): {reason}")


def _images(raw: dict[str, Any], path: Path, layout: Layout) -> np.ndarray:
    """The ``data`` array of an unpickled file, refused unless it is uint8 (n, 3072)."""
    images = raw["data"]
    if not isinstance(images, np.ndarray):
        raise _refuse(path, layout, f"'data' is a {type(images).__name__}, not a numpy array")
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != ROW_BYTES:
        raise _refuse(path, layout, f"'data' is {images.dtype} {tuple(images.shape)}")
    return images


def _labels(raw: dict[str, Any], path: Path, layout: Layout, count: int) -> np.ndarray:
    """The labels of an unpickled file, refused unless they are ``count`` integers in ``0..classes - 1``."""
    key = layout.label_key
    try:
        labels = np.asarray(raw[key])
    except ValueError as error:  # a ragged list
        raise _refuse(path, layout, f"'{key}' is not a flat list: {_one_line(error)}") from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        found = f"{labels.dtype} {tuple(labels.shape)}"
        raise _refuse(path, layout, f"'{key}' is {found}, not a list of integers")
    if len(labels) != count:
        raise _refuse(path, layout, f"{len(labels)} labels for {count} images")
    outside = labels[(labels < 0) | (labels >= layout.classes)]
    if len(outside):
        raise _refuse(
            path, layout, f"{len(outside)} label(s) outside 0..{layout.classes - 1}, the first {outside[0]}"
        )
    return labels


def read_cifar_file(path: Path, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled file's ``(uint8 images N x 3 x 32 x 32, int64 labels)``, checked against ``layout``.

    Raises a one-line ``ConfigError("data.data_dir: ...")`` naming the file when it is not in the format.
    """
    try:
        raw = _unpickle(path)
    except UNPICKLING_ERRORS as error:
        raise _refuse(path, layout, _one_line(error)) from None
    if not isinstance(raw, dict):
        raise _refuse(path, layout, f"it holds a {type(raw).__name__}")
    raw = {k.decode(errors="replace") if isinstance(k, bytes) else k: v for k, v in raw.items()}
    absent = [key for key in ("data", layout.label_key) if key not in raw]
    if absent:
        raise _refuse(path, layout, f"no {', '.join(repr(key) for key in absent)} key")
    images = _images(raw, path, layout)
    labels = _labels(raw, path, layout, len(images))
    pixels = torch.from_numpy(np.ascontiguousarray(images)).view(-1, CHANNELS, SIDE, SIDE)
    return pixels, torch.as_tensor(labels, dtype=torch.long)


def read_cifar(data_dir: str | Path, variant: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (uint8 images N x 3 x 32 x 32, int64 labels), "test": (...)}`` from the pickled files."""
    if variant not in LAYOUT:
        raise ConfigError(f"data.variant must be one of {', '.join(LAYOUT)} (got {variant!r})")
    layout = LAYOUT[variant]
    folder, train_files, test_file = layout.folder, layout.train_files, layout.test_file
    root = Path(data_dir) / folder
    missing = [name for name in [*train_files, test_file] if not (root / name).is_file()]
    if missing:
        raise ConfigError(
            f"data.data_dir: {variant} not found, expected {root}/{{{', '.join(missing)}}} "
            "(the 'python version' archive from https://www.cs.toronto.edu/~kriz/cifar.html, extracted)"
        )
    splits = {}
    for split, names in (("train", train_files), ("test", [test_file])):
        images, labels = zip(*(read_cifar_file(root / name, layout) for name in names), strict=True)
        splits[split] = (torch.cat(images), torch.cat(labels))
    return splits


# the label-names file of each variant (not read here, written for a faithful copy of the archive)
META_FILES = {"cifar10": ("batches.meta", b"label_names"), "cifar100": ("meta", b"fine_label_names")}


def write_cifar(
    root: str | Path, variant: str, per_class: int = 3, test_per_class: int = 1, seed: int = 0
) -> np.ndarray:
    """Write tiny files in the real format under ``root`` (what :func:`read_cifar` reads; for tests and
    ``make gpu-check``): ``per_class`` training and ``test_per_class`` test images of every class, random
    uint8 pixels from ``seed``, labels in class order, the training set split over the variant's training
    files. Returns the training images (N × 3072) in file order."""
    layout = LAYOUT[variant]
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(layout.classes), per_class)
    images = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    test_labels = np.repeat(np.arange(layout.classes), test_per_class)
    test_images = rng.integers(0, 256, size=(len(test_labels), 3072), dtype=np.uint8)
    folder = Path(root) / layout.folder
    parts = np.array_split(np.arange(len(labels)), len(layout.train_files))
    for name, part in zip(layout.train_files, parts, strict=True):
        _write_record(folder / name, images[part], labels[part], layout)
    _write_record(folder / layout.test_file, test_images, test_labels, layout)
    meta_file, meta_key = META_FILES[variant]
    _write_pickle(folder / meta_file, {meta_key: [f"c{i}".encode() for i in range(layout.classes)]})
    return images


def _write_record(path: Path, images: np.ndarray, labels: np.ndarray, layout: Layout) -> None:
    """One pickled CIFAR file: ``data`` and the variant's label key (CIFAR-100 adds coarse labels)."""
    record = {b"data": images, layout.label_key.encode(): labels.tolist()}
    if layout.label_key == "fine_labels":
        record[b"coarse_labels"] = (labels // 5).tolist()
    _write_pickle(path, record)


def _write_pickle(path: Path, content: dict[bytes, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=2)


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
            raise ConfigError(f"data.variant must be one of {', '.join(LAYOUT)} (got {variant!r})")
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1) (got {val_fraction})")
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

    def data_fingerprint(self) -> str:
        """See :meth:`TensorDataModule.data_fingerprint`; cheap here: the variant, the split and label-noise
        parameters, and each file's name, size and modification time (the files are never read)."""
        layout = LAYOUT[self.variant]
        root = Path(self.data_dir) / layout.folder
        stats = {name: (root / name).stat() for name in [*layout.train_files, layout.test_file]}
        return fingerprint_of(
            {
                "dataset": class_path(self),
                "variant": self.variant,
                "split": [self.val_fraction, self.split_seed, self.label_noise, self.noise_seed],
                "files": {name: [stat.st_size, stat.st_mtime_ns] for name, stat in stats.items()},
            }
        )

    def augment_training_batch(self, batch: Any) -> Any:
        """The random crop (4-pixel zero padding) and horizontal flip of every image (``augment: true``)."""
        if not self.augment:
            return batch
        images, labels = batch
        return random_crop_flip(images), labels
