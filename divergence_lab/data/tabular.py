"""Tables of numeric features and a class label, from scikit-learn's bundled tables or a file (config only).

``source`` is one of:

* ``sklearn:<name>``: a table bundled with scikit-learn, read offline with ``sklearn.datasets.load_<name>``
  (``wine``, ``iris``, ``breast_cancer``, ``digits``);
* a ``.npz`` file (``numpy.savez``) with ``x`` (N, F) numeric features and ``y`` (N,) labels, split like
  the others; or with all six arrays ``x_train, y_train, x_val, y_val, x_test, y_test``, the splits to use
  as they are (``x`` / ``y`` and the fractions are then ignored);
* a ``.csv`` file (comma-separated, UTF-8) with a header row: the column named ``label_column`` holds the
  labels, every other column is a numeric feature.

A relative file path is resolved against the directory ``dlab`` was started from (Hydra's
``runtime.cwd``; the current directory when Hydra is not running); ``~`` is expanded.

Every example needs a label: an empty label cell of a CSV is refused naming its line (the file's line
number, the header being line 1), an empty string label of a .npz naming its array and 0-based index. A
class that no training example has (a .npz's fixed val or test split holding a label its training split
lacks, or a class too small to keep a training example after the split) would get an output unit that
training never reaches: it is refused naming the class and the split, unless ``unseen_classes`` is ``keep``,
which trains with it and logs a one-line warning naming it.

Labels are mapped to ``0..K-1`` in the sorted order of their distinct values over the whole table (numeric
order when every label is an integer, so ``0..K-1`` stays as it is; text order otherwise). Without fixed
splits, the split is stratified and fixed by ``split_seed``
(:func:`~divergence_lab.data.tensor_datamodule.stratified_split`, as ``digits``); ``seed`` only changes
the batch order.

With ``standardize`` every feature ``j`` is z-scored with the training split's statistics:
``x'[:, j] = (x[:, j] - mean_j) / std_j`` for every split, where ``mean_j = mean(x_train[:, j])`` and
``std_j = sqrt(mean((x_train[:, j] - mean_j)^2))`` (population std) are taken over the training rows only;
a constant feature (``std_j = 0``) is divided by 1. Features are computed in float64, served as float32.

Every bad value or file is refused with a one-line :class:`~divergence_lab.ground.errors.ConfigError` (a
``ValueError``) starting with ``data.<key>``, which ``dlab`` shows as ``dlab: error: ...`` (exit 2). The data
fingerprint hashes the tensors served, not the path: editing the file changes it, moving it does not.
"""

from __future__ import annotations

import csv
import logging
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import to_absolute_path

from divergence_lab.data.content import SKLEARN_PREFIX
from divergence_lab.data.tensor_datamodule import TensorDataModule, check_split_fractions, stratified_split
from divergence_lab.ground.errors import ConfigError

SKLEARN_TABLES = ("wine", "iris", "breast_cancer", "digits")
SPLITS = ("train", "val", "test")
FIXED_SPLIT_KEYS = tuple(f"{axis}_{split}" for split in SPLITS for axis in ("x", "y"))
SOURCE_FORMS = f"{SKLEARN_PREFIX}<name> ({', '.join(SKLEARN_TABLES)}), a .npz file or a .csv file"
# what reading a corrupt, truncated or pickled .npz raises (allow_pickle is off: object arrays are refused)
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)
SHOWN_NAMES = 10  # column names quoted in a message at most
UNSEEN_CLASSES = ("refuse", "keep")  # data.unseen_classes: what a class without a training example does

log = logging.getLogger(__name__)

DEFAULT_LABEL_COLUMN = "label"
Table = tuple[np.ndarray, np.ndarray]  # features (N, F) numeric, labels (N,) integers or text


def _refuse(key: str, message: str) -> ConfigError:
    """The one-line refusal ``data.<key>: <message>`` (line breaks in ``message`` become spaces)."""
    return ConfigError(f"data.{key}: {one_line(message)}")


def one_line(text: str) -> str:
    """``text`` with its line breaks (a numpy message's, a file name's) replaced by spaces."""
    return " ".join(text.splitlines())


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:SHOWN_NAMES])
    return shown + (f" ... ({len(names)} in all)" if len(names) > SHOWN_NAMES else "")


def load_sklearn_table(name: str) -> Table:
    """``(x, y)`` of ``sklearn.datasets.load_<name>`` (bundled with scikit-learn: nothing is downloaded)."""
    from sklearn import datasets

    if name not in SKLEARN_TABLES:
        raise _refuse("source", f"unknown table {SKLEARN_PREFIX}{name}; known: {', '.join(SKLEARN_TABLES)}")
    bunch = getattr(datasets, f"load_{name}")()
    return np.asarray(bunch.data), np.asarray(bunch.target)


def read_npz(path: Path) -> dict[str, Table]:
    """``{"all": (x, y)}``, or ``{"train": (x, y), "val": ..., "test": ...}`` when it holds fixed splits."""
    try:
        archive = np.load(path, allow_pickle=False)
    except NPZ_ERRORS as error:
        raise _refuse(
            "source", f"{path} is not a readable .npz file: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _refuse("source", f"{path} holds a single array, not a .npz archive (numpy.savez) of x and y")
    with archive:
        names = list(archive.files)
        try:
            if any(key in names for key in FIXED_SPLIT_KEYS):
                missing = [key for key in FIXED_SPLIT_KEYS if key not in names]
                if missing:
                    raise _refuse(
                        "source",
                        f"{path} has fixed splits but lacks {', '.join(missing)} (fixed splits need all of "
                        f"{', '.join(FIXED_SPLIT_KEYS)}; or give x and y only, to be split)",
                    )
                return {split: (archive[f"x_{split}"], archive[f"y_{split}"]) for split in SPLITS}
            missing = [key for key in ("x", "y") if key not in names]
            if missing:
                raise _refuse(
                    "source",
                    f"{path} has no array {' or '.join(missing)} (it holds {_listed(names) or 'nothing'}); "
                    f"expected x (N, F) and y (N,), or {', '.join(FIXED_SPLIT_KEYS)}",
                )
            return {"all": (archive["x"], archive["y"])}
        except ConfigError:
            raise
        except NPZ_ERRORS as error:
            raise _refuse(
                "source", f"{path}: an array cannot be read: {type(error).__name__}: {error}"
            ) from None


def read_csv(path: Path, label_column: str) -> Table:
    """``(x, y)`` of a comma-separated file with a header row: ``y`` the ``label_column`` (text), ``x`` every
    other column as float64."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            # (the file's line number where the row ends, the row): a quoted cell may span lines
            numbered = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise _refuse(
            "source", f"{path} cannot be read as UTF-8 CSV: {type(error).__name__}: {error}"
        ) from None
    numbered = [(line, row) for line, row in numbered if any(cell.strip() for cell in row)]  # blank lines
    if not numbered:
        raise _refuse("source", f"{path} is empty (expected a header row, then one row per example)")
    header = [name.strip() for name in numbered[0][1]]
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise _refuse("source", f"{path}: the header names {_listed(duplicates)} more than once")
    if label_column not in header:
        raise _refuse(
            "label_column", f"{label_column!r} is not a column of {path} (its columns: {_listed(header)})"
        )
    if len(header) < 2:
        raise _refuse("source", f"{path} has no feature column (only the label column {label_column!r})")
    body = numbered[1:]
    if not body:
        raise _refuse("source", f"{path} has a header but no data rows")
    for number, row in body:
        if len(row) != len(header):
            raise _refuse("source", f"{path} line {number} has {len(row)} fields, the header {len(header)}")
    label_index = header.index(label_column)
    labels = np.array([row[label_index].strip() for _, row in body])
    for number, row in body:
        if not row[label_index].strip():
            raise _refuse(
                "source",
                f"{path} line {number} has an empty label (column {label_column!r}; line numbers count the "
                "header as line 1); every example needs a label",
            )
    features = []
    for index, name in enumerate(header):
        if index == label_index:
            continue
        column = []
        for number, row in body:
            cell = row[index].strip()
            try:
                column.append(float(cell))
            except ValueError:
                raise _refuse(
                    "source",
                    f"{path}: feature column {name!r} is not numeric (line {number}: {cell!r}); every "
                    f"column but data.label_column={label_column!r} must hold numbers",
                ) from None
        features.append(column)
    return np.array(features, dtype=np.float64).T, labels


def check_table(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Refuse features that are not a finite numeric (N, F) array, or labels that are not N integers or
    strings; ``where`` names the table in the message."""
    numeric = np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_
    if x.ndim != 2 or not numeric or np.issubdtype(x.dtype, np.complexfloating):
        raise _refuse("source", f"{where}: features must be a numeric (N, F) array (got {x.dtype} {x.shape})")
    labelled = np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_ or y.dtype.kind in "US"
    if y.ndim != 1 or not labelled:
        raise _refuse(
            "source",
            f"{where}: labels must be an (N,) array of integers or strings (got {y.dtype} {y.shape})",
        )
    if len(x) != len(y):
        raise _refuse("source", f"{where}: {len(x)} feature rows but {len(y)} labels")
    if y.dtype.kind in "US" and len(empty := np.flatnonzero(np.char.strip(y.astype(str)) == "")):
        raise _refuse(
            "source",
            f"{where}: the label at index {int(empty[0])} (0-based) is empty ({len(empty)} empty label(s)); "
            "every example needs a label",
        )
    if len(x) == 0 or x.shape[1] == 0:
        raise _refuse("source", f"{where}: the table is empty (features {x.shape})")
    bad = int((~np.isfinite(x.astype(np.float64))).sum())
    if bad:
        raise _refuse("source", f"{where}: the features hold {bad} missing or infinite value(s) (NaN, inf)")


def encode_labels(labels: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(classes, codes)``: the distinct values of all ``labels`` in sorted order (numeric when every label
    is an integer or integer text, text order otherwise) and each array mapped to ``0..K-1`` by them."""
    merged = np.concatenate([np.asarray(y) for y in labels])
    if merged.dtype.kind in "US":
        try:
            merged = merged.astype(np.int64)
        except ValueError:
            merged = merged.astype(str)
    classes = np.unique(merged)
    return classes, [np.searchsorted(classes, np.asarray(y).astype(merged.dtype)) for y in labels]


def standardize_splits(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Z-score every split's features in place with the training split's ``mean`` and ``std`` per feature
    (population std; a constant feature's std of 0 is replaced by 1): ``x' = (x - mean) / std``."""
    x_train = splits["train"][0]
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    for split, (x, y) in splits.items():
        splits[split] = ((x - mean) / std, y)


class TabularDataModule(TensorDataModule):
    """A table of numeric features, ``(N, F)`` float32 vectors; see the module docstring."""

    def __init__(
        self,
        source: str = "sklearn:wine",
        label_column: str = DEFAULT_LABEL_COLUMN,
        val_fraction: float = 0.15,
        test_fraction: float = 0.25,
        split_seed: int = 0,
        standardize: bool = True,
        batch_size: int = 32,
        eval_batch_size: int = 512,
        seed: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
        unseen_classes: str = "refuse",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, label_noise, noise_seed)
        if unseen_classes not in UNSEEN_CLASSES:
            raise ConfigError(
                f"data.unseen_classes must be one of {', '.join(UNSEEN_CLASSES)} (got {unseen_classes!r})"
            )
        if not isinstance(source, str) or not source.strip():
            raise _refuse("source", f"must be {SOURCE_FORMS} (got {source!r})")
        if source.startswith(SKLEARN_PREFIX):
            name = source.removeprefix(SKLEARN_PREFIX)
            if name not in SKLEARN_TABLES:
                raise _refuse(
                    "source", f"unknown table {source!r}; known: {', '.join(SKLEARN_TABLES)} (after sklearn:)"
                )
        elif Path(source).suffix.lower() not in (".npz", ".csv"):
            raise _refuse("source", f"must be {SOURCE_FORMS} (got {source!r})")
        if not isinstance(label_column, str) or not label_column.strip():
            raise _refuse("label_column", f"must be the name of a CSV column (got {label_column!r})")
        if label_column != DEFAULT_LABEL_COLUMN and Path(source).suffix.lower() != ".csv":
            raise _refuse(
                "label_column",
                f"names a column of a .csv source; data.source={source} is not one (its labels are its own), "
                f"so label_column={label_column!r} would be ignored",
            )
        check_split_fractions(val_fraction, test_fraction)
        if not isinstance(standardize, bool):
            raise ConfigError(f"data.standardize must be true or false (got {standardize!r})")
        if isinstance(split_seed, bool) or not isinstance(split_seed, int):
            raise ConfigError(f"data.split_seed must be an integer (got {split_seed!r})")
        self.source = source
        local = None if source.startswith(SKLEARN_PREFIX) else str(Path(source).expanduser())
        self.path = None if local is None else Path(to_absolute_path(local))
        self.label_column = label_column
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.standardize = standardize
        self.unseen_classes = unseen_classes

    def read_tables(self) -> dict[str, Table]:
        """``{"all": (x, y)}`` to be split, or the fixed ``{"train", "val", "test"}`` tables of a .npz."""
        if self.path is None:
            return {"all": load_sklearn_table(self.source.removeprefix(SKLEARN_PREFIX))}
        if not self.path.is_file():
            raise _refuse(
                "source",
                f"file not found: {self.path} (a relative path is resolved against the directory dlab was "
                "started from)",
            )
        if self.path.suffix.lower() == ".npz":
            return read_npz(self.path)
        return {"all": read_csv(self.path, self.label_column)}

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        tables = self.read_tables()
        where = one_line(str(self.path or self.source))
        for name, (x, y) in tables.items():
            check_table(x, y, where if name == "all" else f"{where} ({name} split)")
        widths = {name: x.shape[1] for name, (x, _) in tables.items()}
        if len(set(widths.values())) > 1:
            raise _refuse("source", f"{where}: the splits have different numbers of features {widths}")
        classes, codes = encode_labels([y for _, y in tables.values()])
        if len(classes) < 2:
            found = f"only the class {classes[0].item()!r}" if len(classes) else "no class"
            raise _refuse("source", f"{where} has {found}; a classification table needs at least 2 classes")
        tensors = {
            name: (torch.as_tensor(x.astype(np.float64)), torch.as_tensor(code, dtype=torch.long))
            for (name, (x, _)), code in zip(tables.items(), codes, strict=True)
        }
        if "all" in tensors:
            splits = self.split(*tensors["all"], where, len(classes))
        else:
            splits = tensors
            for name in SPLITS:
                if len(splits[name][1]) == 0:
                    raise _refuse("source", f"{where}: the fixed {name} split (x_{name}, y_{name}) is empty")
        self.check_unseen_classes(splits, classes, where)
        if self.standardize:
            standardize_splits(splits)
        return {name: (x.float(), y) for name, (x, y) in splits.items()}

    def check_unseen_classes(
        self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], classes: np.ndarray, where: str
    ) -> None:
        """Refuse (``unseen_classes: refuse``) or log a warning (``keep``) for the classes that some split
        holds and the training split does not, naming each with the splits that hold it."""
        trained = set(splits["train"][1].tolist())
        unseen: dict[int, list[str]] = {}
        for name in SPLITS[1:]:
            for code in sorted(set(splits[name][1].tolist()) - trained):
                unseen.setdefault(code, []).append(name)
        if not unseen:
            return
        shown = [
            f"{classes[code].item()!r} (in {' and '.join(names)})" for code, names in sorted(unseen.items())
        ]
        described = ", ".join(shown[:SHOWN_NAMES]) + (
            f" ... ({len(shown)} in all)" if len(shown) > SHOWN_NAMES else ""
        )
        what = f"{where}: no training example has the class(es) {described}"
        if self.unseen_classes == "keep":
            log.warning("%s; kept (data.unseen_classes=keep): their output units are never trained", what)
            return
        raise _refuse(
            "source",
            f"{what}; no training example would reach their output units: add training examples, or set "
            "data.unseen_classes=keep to train with them",
        )

    def split(
        self, x: torch.Tensor, y: torch.Tensor, where: str, num_classes: int
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The stratified train/val/test split of ``(x, y)`` (fixed by ``split_seed``); refused when a split
        would be empty (each class gives ``round(fraction * its size)`` examples to val and to test)."""
        parts = stratified_split(y, self.fractions, self.split_seed)
        splits = {name: (x[part], y[part]) for name, part in zip(SPLITS, parts, strict=True)}
        val_fraction, test_fraction = self.fractions
        size = f"{len(y)} examples in {num_classes} classes"
        if len(splits["train"][1]) == 0:
            raise ConfigError(
                f"data.val_fraction + data.test_fraction = {val_fraction} + {test_fraction} leave no "
                f"training example of {where} ({size}); lower them"
            )
        for name, key, fraction in (
            ("val", "val_fraction", val_fraction),
            ("test", "test_fraction", test_fraction),
        ):
            if len(splits[name][1]) == 0:
                raise ConfigError(
                    f"data.{key} = {fraction} leaves the {name} split of {where} empty ({size}, "
                    f"round({key} * class size) examples per class); raise it"
                )
        return splits
