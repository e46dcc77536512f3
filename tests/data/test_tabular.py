"""The config-only tabular data module: sources, labels, splits, standardisation, fingerprint, refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from divergence_lab.data.protocol import ClassificationData
from divergence_lab.data.tabular import TabularDataModule
from tests.conftest import run_training

CLASSES, PER_CLASS, FEATURES = 3, 40, 5


def _table(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``PER_CLASS`` rows per class, features on different scales, the last one constant."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    x = rng.normal(size=(len(y), FEATURES)) * [1.0, 10.0, 0.1, 3.0, 0.0] + [0.0, 5.0, -2.0, 100.0, 7.0]
    x[:, 0] += 2.0 * y  # a feature that tells the classes apart
    return x, y


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _setup(**kwargs) -> TabularDataModule:
    dm = TabularDataModule(**kwargs)
    dm.setup()
    return dm


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(row) for row in x.tolist()}


def test_npz_is_split_stratified_and_fixed_by_split_seed(tmp_path: Path) -> None:
    x, y = _table()
    path = _npz(tmp_path / "table.npz", x=x, y=y)
    dm = _setup(source=str(path), val_fraction=0.25, test_fraction=0.25, standardize=False)
    assert isinstance(dm, ClassificationData)
    assert dm.num_classes == CLASSES and dm.input_shape == (FEATURES,)
    for split, fraction in (("val", 0.25), ("test", 0.25)):
        counts = torch.bincount(dm.splits[split].tensors[1], minlength=CLASSES)
        assert counts.tolist() == [round(fraction * PER_CLASS)] * CLASSES  # stratified
    served = torch.cat([dm.splits[s].tensors[0] for s in ("train", "val", "test")])
    assert len(served) == len(x) and _rows(served) == _rows(torch.tensor(x, dtype=torch.float32))
    assert dm.train_inputs() is dm.splits["train"].tensors[0]
    labels_of = {
        tuple(r): int(c) for r, c in zip(torch.tensor(x, dtype=torch.float32).tolist(), y, strict=True)
    }
    for split in ("train", "val", "test"):
        xs, ys = dm.splits[split].tensors
        assert [labels_of[tuple(r)] for r in xs.tolist()] == ys.tolist()  # rows keep their labels
    same = _setup(source=str(path), val_fraction=0.25, test_fraction=0.25, standardize=False, seed=7)
    assert torch.equal(same.splits["test"].tensors[0], dm.splits["test"].tensors[0])
    other = _setup(source=str(path), val_fraction=0.25, test_fraction=0.25, standardize=False, split_seed=1)
    assert not torch.equal(other.splits["test"].tensors[0], dm.splits["test"].tensors[0])


def test_npz_fixed_splits_are_used_as_given(tmp_path: Path) -> None:
    x, y = _table()
    y = y + 1  # labels 1..3: mapped to 0..2 over all splits
    row = np.arange(len(y)) % 5  # every class in every split
    parts = {"train": row < 3, "val": row == 3, "test": row == 4}
    arrays = {f"{a}_{s}": (x if a == "x" else y)[part] for s, part in parts.items() for a in ("x", "y")}
    path = _npz(tmp_path / "fixed.npz", x=x[:3], y=y[:3], **arrays)  # x, y are ignored with fixed splits
    dm = _setup(source=str(path), standardize=False)
    assert dm.num_classes == CLASSES
    for split, part in parts.items():
        xs, ys = dm.splits[split].tensors
        assert torch.equal(xs, torch.tensor(x[part], dtype=torch.float32))
        assert torch.equal(ys, torch.tensor(y[part] - 1))


def test_csv_with_text_labels(tmp_path: Path) -> None:
    lines = ["height, weight ,species"]
    lines += [
        f"{1.5 + i},{60 + i},{'versicolor' if i % 3 == 0 else 'setosa' if i % 3 == 1 else 'virginica'}"
        for i in range(30)
    ]
    path = _csv(tmp_path / "plants.csv", lines)
    dm = _setup(
        source=str(path), label_column="species", standardize=False, val_fraction=0.2, test_fraction=0.2
    )
    assert dm.num_classes == 3 and dm.input_shape == (2,)
    x = torch.cat([dm.splits[s].tensors[0] for s in ("train", "val", "test")])
    y = torch.cat([dm.splits[s].tensors[1] for s in ("train", "val", "test")])
    # sorted label values: setosa = 0, versicolor = 1, virginica = 2
    expected = {1.5 + i: {0: 1, 1: 0, 2: 2}[i % 3] for i in range(30)}
    assert {round(a, 4): int(b) for a, b in zip(x[:, 0].tolist(), y.tolist(), strict=True)} == {
        round(k, 4): v for k, v in expected.items()
    }


def test_csv_integer_labels_keep_their_numeric_order(tmp_path: Path) -> None:
    lines = ["f,label"] + [f"{i},{[2, 10, 9][i % 3]}" for i in range(30)]
    dm = _setup(source=str(_csv(tmp_path / "t.csv", lines)), standardize=False)
    x = torch.cat([dm.splits[s].tensors[0] for s in ("train", "val", "test")])
    y = torch.cat([dm.splits[s].tensors[1] for s in ("train", "val", "test")])
    assert {int(a): int(b) for a, b in zip(x[:, 0].tolist(), y.tolist(), strict=True)} == {
        i: [0, 2, 1][i % 3] for i in range(30)
    }


def test_sklearn_wine() -> None:
    dm = _setup(source="sklearn:wine")
    assert dm.num_classes == 3 and dm.input_shape == (13,)
    assert sum(len(s) for s in dm.splits.values()) == 178
    assert dm.train_inputs().dtype == torch.float32


@pytest.mark.parametrize("name, shape, classes", [("iris", (4,), 3), ("breast_cancer", (30,), 2)])
def test_other_sklearn_tables(name: str, shape: tuple[int, ...], classes: int) -> None:
    dm = _setup(source=f"sklearn:{name}")
    assert dm.input_shape == shape and dm.num_classes == classes


def test_standardisation_uses_the_training_statistics_only(tmp_path: Path) -> None:
    x, y = _table()
    path = _npz(tmp_path / "table.npz", x=x, y=y)
    raw = _setup(source=str(path), standardize=False)
    scaled = _setup(source=str(path))
    train = raw.splits["train"].tensors[0].double().numpy()
    mean, std = train.mean(axis=0), train.std(axis=0)  # population std (ddof=0)
    assert std[-1] == 0  # the constant feature
    std[std == 0] = 1.0
    for split in ("train", "val", "test"):
        expected = (raw.splits[split].tensors[0].double().numpy() - mean) / std
        np.testing.assert_allclose(scaled.splits[split].tensors[0].numpy(), expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(scaled.splits[split].tensors[1], raw.splits[split].tensors[1])
    train_scaled = scaled.splits["train"].tensors[0].double()
    np.testing.assert_allclose(train_scaled.mean(0).numpy(), 0, atol=1e-6)
    np.testing.assert_allclose(train_scaled[:, :-1].std(0, unbiased=False).numpy(), 1, atol=1e-5)
    # the val statistics were not used: val is not exactly centred
    assert scaled.splits["val"].tensors[0][:, :-1].mean(0).abs().max() > 1e-3


def test_fingerprint_hashes_the_content_not_the_path(tmp_path: Path) -> None:
    x, y = _table()
    first = _setup(source=str(_npz(tmp_path / "a.npz", x=x, y=y))).data_fingerprint()
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert _setup(source=str(_npz(elsewhere / "b.npz", x=x, y=y))).data_fingerprint() == first
    x[0, 0] += 1.0
    assert _setup(source=str(_npz(tmp_path / "a.npz", x=x, y=y))).data_fingerprint() != first
    y[0] = (y[0] + 1) % CLASSES
    x[0, 0] -= 1.0
    assert _setup(source=str(_npz(tmp_path / "a.npz", x=x, y=y))).data_fingerprint() != first


def test_a_relative_path_is_resolved_against_the_current_directory_without_hydra(
    tmp_path: Path, monkeypatch
) -> None:
    x, y = _table()
    _npz(tmp_path / "table.npz", x=x, y=y)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # an earlier in-process run may have set it
    monkeypatch.chdir(tmp_path)
    dm = _setup(source="table.npz")
    assert dm.path == tmp_path / "table.npz" and dm.num_classes == CLASSES


def test_a_relative_path_is_resolved_against_the_directory_hydra_was_started_from(
    tmp_path: Path, monkeypatch
) -> None:
    launched = tmp_path / "launched"
    launched.mkdir()
    x, y = _table()
    _npz(launched / "table.npz", x=x, y=y)
    started = OmegaConf.create({"hydra": {"runtime": {"cwd": str(launched)}}})
    monkeypatch.setattr(HydraConfig.instance(), "cfg", started)
    monkeypatch.chdir(tmp_path)  # where a job with hydra.job.chdir=true would be
    assert _setup(source="table.npz").path == launched / "table.npz"


def test_label_noise_corrupts_training_labels_only(tmp_path: Path) -> None:
    x, y = _table()
    path = _npz(tmp_path / "t.npz", x=x, y=y)
    clean, noisy = _setup(source=str(path)), _setup(source=str(path), label_noise=0.25, noise_seed=1)
    flipped = (clean.splits["train"].tensors[1] != noisy.splits["train"].tensors[1]).sum().item()
    assert flipped == round(0.25 * len(clean.splits["train"]))
    assert torch.equal(clean.splits["test"].tensors[1], noisy.splits["test"].tensors[1])


# ------------------------------------------------------------------------------------------------ refusals


def _bad_npz(**arrays: np.ndarray) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        return str(_npz(folder / "bad.npz", **arrays))

    return write


def _bad_csv(*lines: str) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        return str(_csv(folder / "bad.csv", list(lines)))

    return write


def _bad_bytes(name: str, content: bytes) -> Callable[[Path], str]:
    def write(folder: Path) -> str:
        (folder / name).write_bytes(content)
        return str(folder / name)

    return write


X, Y = _table()
FIXED = {f"{a}_{s}": (X if a == "x" else Y) for s in ("train", "val", "test") for a in ("x", "y")}
ROWS = [f"{i},{i % 2}" for i in range(20)]

# (id, source: a string or a function writing the file and returning its path, other arguments, message)
REFUSALS = [
    ("unknown-table", "sklearn:mnist", {}, "data.source: unknown table 'sklearn:mnist'; known: wine, iris"),
    (
        "other-suffix",
        "table.txt",
        {},
        "data.source: must be sklearn:<name> (wine, iris, breast_cancer, digits)",
    ),
    ("missing-file", "nowhere/table.npz", {}, "data.source: file not found: "),
    ("npz-without-y", _bad_npz(x=X), {}, "data.source: {path} has no array y (it holds 'x')"),
    ("npz-without-x-and-y", _bad_npz(z=X), {}, "has no array x or y"),
    (
        "npz-incomplete-fixed-splits",
        _bad_npz(**{k: v for k, v in FIXED.items() if k != "y_test"}),
        {},
        "has fixed splits but lacks y_test",
    ),
    (
        "npz-random-bytes",
        _bad_bytes("bad.npz", b"\x93NUMPY nonsense" * 20),
        {},
        "is not a readable .npz file",
    ),
    (
        "npz-object-array",
        _bad_npz(x=np.array([[1, "a"]], dtype=object), y=Y[:1]),
        {},
        "an array cannot be read",
    ),
    ("npz-1d-features", _bad_npz(x=Y.astype(float), y=Y), {}, "features must be a numeric (N, F) array"),
    ("npz-float-labels", _bad_npz(x=X, y=Y.astype(float)), {}, "labels must be an (N,) array of integers"),
    ("npz-length-mismatch", _bad_npz(x=X, y=Y[:-1]), {}, "120 feature rows but 119 labels"),
    ("npz-nan", _bad_npz(x=np.where(X > 99, np.nan, X), y=Y), {}, "missing or infinite value(s)"),
    ("npz-one-class", _bad_npz(x=X, y=np.zeros_like(Y)), {}, "has only the class 0; a classification table"),
    (
        "npz-fixed-splits-of-different-widths",
        _bad_npz(**{**FIXED, "x_test": X[:, :2]}),
        {},
        "the splits have different numbers of features",
    ),
    ("csv-without-label-column", _bad_csv("a,b", "1,2"), {}, "data.label_column: 'label' is not a column of"),
    (
        "csv-text-feature",
        _bad_csv("size,color,label", "1,red,a", "2,blue,b"),
        {},
        "feature column 'color' is not numeric (line 2: 'red')",
    ),
    (
        "csv-empty-cell",
        _bad_csv("f,label", "1,a", ",b"),
        {},
        "feature column 'f' is not numeric (line 3: '')",
    ),
    ("csv-ragged-row", _bad_csv("f,label", "1,a", "2,b,3"), {}, "line 3 has 3 fields, the header 2"),
    ("csv-empty", _bad_csv(""), {}, "is empty (expected a header row"),
    ("csv-header-only", _bad_csv("f,label"), {}, "has a header but no data rows"),
    ("csv-only-the-label", _bad_csv("label", "a", "b"), {}, "has no feature column"),
    ("csv-duplicate-column", _bad_csv("f,f,label", "1,2,a"), {}, "the header names 'f' more than once"),
    ("csv-not-utf8", _bad_bytes("bad.csv", b"f,label\n1,\xff\xfe\n"), {}, "cannot be read as UTF-8 CSV"),
    ("empty-label-column", "sklearn:wine", {"label_column": ""}, "data.label_column: must be the name"),
    ("val-fraction-zero", "sklearn:wine", {"val_fraction": 0.0}, "data.val_fraction must be in (0, 1)"),
    ("test-fraction-above-1", "sklearn:wine", {"test_fraction": 1.5}, "data.test_fraction must be in (0, 1)"),
    ("fraction-as-text", "sklearn:wine", {"val_fraction": "a lot"}, "data.val_fraction must be in (0, 1)"),
    (
        "fractions-sum-to-1",
        "sklearn:wine",
        {"val_fraction": 0.5, "test_fraction": 0.5},
        "data.val_fraction + data.test_fraction must be < 1",
    ),
    (
        "val-split-empty",
        _bad_csv("f,label", *ROWS),
        {"val_fraction": 0.01},
        "data.val_fraction = 0.01 leaves the val split of",
    ),
    ("standardize-as-text", "sklearn:wine", {"standardize": "yes"}, "data.standardize must be true or false"),
    ("split-seed-as-text", "sklearn:wine", {"split_seed": "one"}, "data.split_seed must be an integer"),
    ("batch-size-zero", "sklearn:wine", {"batch_size": 0}, "data.batch_size must be an integer >= 1"),
]


@pytest.mark.parametrize("source, kwargs, message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_bad_tables_and_values_are_refused_in_one_line(
    source: str | Callable[[Path], str], kwargs: dict, message: str, tmp_path: Path
) -> None:
    path = source(tmp_path) if callable(source) else source
    with pytest.raises(ValueError) as refused:
        _setup(source=path, **kwargs)
    text = str(refused.value)
    assert "\n" not in text and text.startswith("data."), text
    assert message.format(path=path) in text, text


# ------------------------------------------------------------------------------------------------ end to end

TINY_KD = [
    "data=tabular",
    "method=kd",
    "trainer.max_epochs=1",
    "method.teacher.max_epochs=2",
    "method.teacher.model.hidden=[16]",
    "model.hidden=[8]",
]


@pytest.mark.slow
def test_kd_on_sklearn_wine_runs(tmp_path: Path) -> None:
    record, run_dir = run_training(tmp_path, [*TINY_KD, "data.source=sklearn:wine"])
    assert (run_dir / "metrics.json").is_file()
    assert record["method"] == "kd" and record["data"] == "tabular"
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0


@pytest.mark.slow
def test_kd_on_an_npz_file_runs(tmp_path: Path) -> None:
    x, y = _table()
    path = _npz(tmp_path / "table.npz", x=x, y=y)
    record, run_dir = run_training(tmp_path, [*TINY_KD, f"data.source={path}"])
    assert (run_dir / "metrics.json").is_file()
    assert record["data"] == "tabular" and 0.0 <= record["metrics"]["test/acc"] <= 1.0
