import pytest
import torch

from divergence_lab.data.digits import DigitsDataModule
from divergence_lab.data.synthetic import SyntheticDataModule
from divergence_lab.data.tensor_datamodule import EpochSeededSampler


def _setup(dm):
    dm.setup()
    return dm


def test_digits_split_is_disjoint_stratified_and_fixed_by_split_seed():
    dm = _setup(DigitsDataModule(seed=0))
    sizes = {name: len(ds) for name, ds in dm.splits.items()}
    assert sum(sizes.values()) == 1797
    assert 170 <= sizes["val"] <= 190 and 350 <= sizes["test"] <= 370
    assert dm.input_shape == (1, 8, 8) and dm.num_classes == 10
    for split in ("val", "test"):
        counts = torch.bincount(dm.splits[split].tensors[1], minlength=10)
        assert counts.min() >= 0.8 * counts.max()
    # training seed does not change the split; split_seed does
    other_seed = _setup(DigitsDataModule(seed=5))
    assert torch.equal(dm.splits["test"].tensors[0], other_seed.splits["test"].tensors[0])
    other_split = _setup(DigitsDataModule(split_seed=1))
    assert not torch.equal(dm.splits["test"].tensors[0], other_split.splits["test"].tensors[0])


def test_digits_split_indices_do_not_overlap():
    from divergence_lab.data.tensor_datamodule import stratified_split

    y = torch.arange(10).repeat(50)
    train, val, test = stratified_split(y, (0.1, 0.2), seed=3)
    all_idx = torch.cat([train, val, test])
    assert len(all_idx) == 500 and len(torch.unique(all_idx)) == 500
    assert len(val) == 50 and len(test) == 100


def test_digits_flatten_and_value_range():
    dm = _setup(DigitsDataModule(flatten=True))
    x = dm.splits["train"].tensors[0]
    assert x.shape[1] == 64 and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"test_fraction": 1.2}, "data.test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
        ({"batch_size": 0}, "data.batch_size"),
    ],
)
def test_digits_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DigitsDataModule(**kwargs)


def test_synthetic_is_seeded_and_sized():
    a = _setup(
        SyntheticDataModule(num_classes=100, dim=8, samples_per_class=5, val_per_class=2, test_per_class=3)
    )
    b = _setup(
        SyntheticDataModule(num_classes=100, dim=8, samples_per_class=5, val_per_class=2, test_per_class=3)
    )
    assert a.num_classes == 100 and a.input_shape == (8,)
    assert len(a.splits["train"]) == 500 and len(a.splits["val"]) == 200 and len(a.splits["test"]) == 300
    assert torch.equal(a.splits["train"].tensors[0], b.splits["train"].tensors[0])
    c = _setup(SyntheticDataModule(num_classes=100, dim=8, samples_per_class=5, data_seed=1))
    assert not torch.equal(a.splits["train"].tensors[0], c.splits["train"].tensors[0])


def test_synthetic_separation_controls_overlap():
    """A nearest-class-mean classifier is near perfect when classes are far apart, poor when they overlap."""

    def nearest_mean_accuracy(separation):
        dm = _setup(SyntheticDataModule(num_classes=10, dim=16, separation=separation, samples_per_class=200))
        x, y = dm.splits["train"].tensors
        means = torch.stack([x[y == k].mean(0) for k in range(10)])
        return (torch.cdist(x, means).argmin(1) == y).float().mean().item()

    assert nearest_mean_accuracy(20.0) > 0.99
    assert nearest_mean_accuracy(1.0) < 0.6


@pytest.mark.parametrize(
    "kwargs, key",
    [({"num_classes": 1}, "num_classes"), ({"separation": 0}, "separation"), ({"dim": 2.5}, "dim")],
)
def test_synthetic_refuses_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=f"data.{key}"):
        SyntheticDataModule(**kwargs)


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch():
    a, b = EpochSeededSampler(50, seed=1), EpochSeededSampler(50, seed=1)
    first = list(a)
    assert first == list(b) and sorted(first) == list(range(50))
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(EpochSeededSampler(50, seed=2)) != first


def test_label_noise_flips_exactly_the_requested_fraction_of_training_labels_only():
    clean = _setup(DigitsDataModule())
    noisy = _setup(DigitsDataModule(label_noise=0.2, noise_seed=1))
    y_clean, y_noisy = clean.splits["train"].tensors[1], noisy.splits["train"].tensors[1]
    flipped = (y_clean != y_noisy).sum().item()
    assert flipped == round(0.2 * len(y_clean))
    assert torch.equal(clean.splits["test"].tensors[1], noisy.splits["test"].tensors[1])
    assert torch.equal(clean.splits["val"].tensors[1], noisy.splits["val"].tensors[1])
    again = _setup(DigitsDataModule(label_noise=0.2, noise_seed=1))
    assert torch.equal(again.splits["train"].tensors[1], y_noisy)


def test_label_noise_out_of_range_is_refused():
    with pytest.raises(ValueError, match=r"data.label_noise must be in \[0, 1\)"):
        DigitsDataModule(label_noise=1.0)


def test_gathered_batches_equal_the_per_example_batches_of_a_plain_tensor_dataset():
    """One gather per tensor gives the batches DataLoader's per-example indexing and stacking gave."""
    from torch.utils.data import DataLoader, TensorDataset

    data = DigitsDataModule(batch_size=64, eval_batch_size=100)
    data.setup()
    train = data.train_dataloader()
    plain = TensorDataset(*data.splits["train"].tensors)
    reference = DataLoader(plain, batch_size=64, sampler=EpochSeededSampler(len(plain), data.seed))
    for epoch in range(2):
        train.sampler.set_epoch(epoch)
        reference.sampler.set_epoch(epoch)
        pairs = list(zip(train, reference, strict=True))
        assert len(pairs) == len(reference) and len(pairs[-1][1][1]) < 64  # a short last batch too
        for (x, y), (x_ref, y_ref) in pairs:
            assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype and x.is_contiguous()
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    evaluation = DataLoader(TensorDataset(*data.splits["val"].tensors), batch_size=100)
    for (x, y), (x_ref, y_ref) in zip(data.val_dataloader(), evaluation, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
