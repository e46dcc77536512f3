"""Every shipped data config builds a module that keeps the :mod:`divergence_lab.data.protocol` contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from divergence_lab.config.checks import CONF_DIR
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.cifar import write_cifar
from divergence_lab.data.glue import write_glue
from divergence_lab.data.protocol import CategoryDiscoveryData, ClassificationData
from tests.conftest import compose_config

# language-model text (lm_*) keeps its own protocol, checked in tests/data/test_text_data.py
DATA_OPTIONS = sorted(
    path.stem for path in (CONF_DIR / "data").glob("*.yaml") if not path.stem.startswith("lm_")
)
# CIFAR configs read tiny fake files; 3 images per class need a larger val fraction than 0.1 to hold any
CIFAR = {
    "cifar10": ("cifar10", ["data.val_fraction=0.34"]),
    "cifar100": ("cifar100", ["data.val_fraction=0.34"]),
    "gcd_cifar100": ("cifar100", ["data.base.val_fraction=0.34"]),
}
TEXT = ("glue", "text_synthetic")  # int64 token rows (divergence_lab.data.text_classification)


def _build(option: str, tmp_path: Path):
    overrides = [f"data={option}"]
    if option in CIFAR:
        variant, extra = CIFAR[option]
        if not (tmp_path / "data").exists():  # rewriting the files would change their mtime (fingerprint)
            write_cifar(tmp_path / "data", variant)
        key = "data.base.data_dir" if option.startswith("gcd_") else "data.data_dir"
        overrides += [f"{key}={tmp_path / 'data'}", *extra]
    if option == "glue":  # tiny SST-2 files in GLUE's layout and a tokenizer folder
        tokenizer = tmp_path / "glue" / "tokenizer"
        if not tokenizer.exists():
            write_glue(tmp_path / "glue", "sst2")
        overrides += [
            f"data.data_dir={tmp_path / 'glue'}",
            f"data.tokenizer={tokenizer}",
            "data.val_fraction=0.25",
        ]
    return instantiate_datamodule(compose_config(overrides).data, seed=3)


def test_the_shipped_configs_are_all_checked():
    assert {"digits", "synthetic", "gcd_digits", "gcd_synthetic", "tabular", *CIFAR} <= set(DATA_OPTIONS)


@pytest.mark.parametrize("option", DATA_OPTIONS)
def test_every_data_config_keeps_the_protocol(option: str, tmp_path: Path) -> None:
    dm = _build(option, tmp_path)
    assert isinstance(dm, ClassificationData)
    assert isinstance(dm, CategoryDiscoveryData) == option.startswith("gcd_")
    assert isinstance(dm.num_classes, int) and dm.num_classes >= 2
    assert isinstance(dm.input_shape, tuple) and all(isinstance(d, int) for d in dm.input_shape)

    loader = dm.train_dataloader()
    inputs = dm.train_inputs()
    dtype = torch.long if option in TEXT else torch.float32
    assert inputs.dtype == dtype and tuple(inputs.shape[1:]) == dm.input_shape
    assert torch.equal(inputs, loader.dataset.tensors[0])  # the training set itself, in its order
    assert len(inputs) == len(loader.dataset)

    # the training order is a function of (seed, epoch) only
    sampler = loader.sampler
    first = list(sampler)
    assert len(first) == len(inputs) and set(first) <= set(range(len(inputs)))
    if not option.startswith("gcd_"):  # GCD draws with replacement (the balanced sampler): no permutation
        assert sorted(first) == list(range(len(inputs)))
    assert list(dm.train_dataloader().sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first

    for evaluation in (dm.val_dataloader(), dm.test_dataloader()):
        x, y = next(iter(evaluation))
        assert x.dtype == dtype and tuple(x.shape[1:]) == dm.input_shape
        assert y.dtype == torch.long and int(y.min()) >= 0 and int(y.max()) < dm.num_classes

    digest = dm.data_fingerprint()
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert _build(option, tmp_path).data_fingerprint() == digest  # the same data, the same digest


def test_gcd_train_inputs_are_the_base_training_inputs() -> None:
    dm = _build("gcd_synthetic", Path("unused"))
    assert torch.equal(dm.train_inputs(), dm.base.train_inputs())
    assert dm.num_known == 5 and dm.augment_kind == "noise"
