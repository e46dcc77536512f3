"""Corrupt, truncated, wrong-format or missing CIFAR files: refused in one line naming the file.

Each case writes tiny CIFAR files in the real format (``divergence_lab.data.cifar.write_cifar``), spoils
one of them, and runs the real ``dlab`` command on them (``method=teacher``, so no teacher is trained
first): the run stops with exit 2 and one ``dlab: error: data.data_dir: <file> ...`` line, and the data
folder is left as it was. The same table is read in-process too, to check the reason each message gives.

The tabular data (``data=tabular``) is refused the same way: a bad ``data.source`` (unknown table, missing,
malformed or one-class file) or other ``data.`` value gives one ``dlab: error: data.<key>: ...`` line.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from divergence_lab.data.cifar import read_cifar, write_cifar
from tests.bad_inputs.harness import BadInput, assert_refused
from tests.conftest import compose_config

DATA = "data"
CIFAR10 = f"{DATA}/cifar-10-batches-py"
CIFAR100 = f"{DATA}/cifar-100-python"
PICKLE_PROTOCOL = 2  # the archives' protocol
RANDOM_BYTES = 4096
OUT_OF_RANGE_LABEL = 10  # CIFAR-10 labels are 0..9
SHORT_ROW = 1024  # one colour plane instead of three


def _argv(variant: str) -> list[str]:
    return [
        f"data={variant}",
        f"data.data_dir={DATA}",
        "model=resnet_cifar",
        "method=teacher",
        "trainer.max_epochs=1",
    ]


def _load(path: Path) -> dict[bytes, Any]:
    with path.open("rb") as handle:
        return pickle.load(handle, encoding="bytes")


def _dump(path: Path, content: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(content, handle, protocol=PICKLE_PROTOCOL)


def _edit(name: str, change: Callable[[dict[bytes, Any]], object]) -> Callable[[Path], None]:
    """A setup writing CIFAR-10 files and replacing batch ``name`` by ``change(its content)``."""

    def setup(work: Path) -> None:
        write_cifar(work / DATA, "cifar10")
        path = work / CIFAR10 / name
        _dump(path, change(_load(path)))

    return setup


def _truncated(work: Path) -> None:
    write_cifar(work / DATA, "cifar10")
    path = work / CIFAR10 / "data_batch_1"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _random_bytes(work: Path) -> None:
    write_cifar(work / DATA, "cifar10")
    (work / CIFAR10 / "test_batch").write_bytes(np.random.default_rng(0).bytes(RANDOM_BYTES))


def _empty_file(work: Path) -> None:
    write_cifar(work / DATA, "cifar10")
    (work / CIFAR10 / "data_batch_2").write_bytes(b"")


def _missing_file(work: Path) -> None:
    write_cifar(work / DATA, "cifar10")
    (work / CIFAR10 / "data_batch_3").unlink()


def _cifar100_without_fine_labels(work: Path) -> None:
    write_cifar(work / DATA, "cifar100")
    path = work / CIFAR100 / "train"
    content = _load(path)
    del content[b"fine_labels"]
    _dump(path, content)


def _replace(content: dict[bytes, Any], key: bytes, value: object) -> dict[bytes, Any]:
    return {**content, key: value}


SETUPS: dict[str, Callable[[Path], None]] = {
    "truncated": _truncated,
    "random_bytes": _random_bytes,
    "empty_file": _empty_file,
    "missing_file": _missing_file,
    "a_list": _edit("data_batch_4", lambda content: list(content.values())),
    "no_labels": _edit("data_batch_5", lambda c: {b"data": c[b"data"]}),
    "short_rows": _edit("data_batch_1", lambda c: _replace(c, b"data", c[b"data"][:, :SHORT_ROW])),
    "float_pixels": _edit("test_batch", lambda c: _replace(c, b"data", c[b"data"] / 255.0)),
    "pixels_as_list": _edit("data_batch_2", lambda c: _replace(c, b"data", c[b"data"].tolist())),
    "label_out_of_range": _edit(
        "data_batch_3", lambda c: _replace(c, b"labels", [*c[b"labels"][:-1], OUT_OF_RANGE_LABEL])
    ),
    "label_missing_one": _edit("data_batch_4", lambda c: _replace(c, b"labels", c[b"labels"][:-1])),
    "labels_as_text": _edit(
        "data_batch_5", lambda c: _replace(c, b"labels", [str(label) for label in c[b"labels"]])
    ),
    "cifar100_without_fine_labels": _cifar100_without_fine_labels,
}


def _case(name: str, file: str, setup: str, variant: str = "cifar10") -> BadInput:
    title = "CIFAR-10 batch" if variant == "cifar10" else "CIFAR-100 file"
    return BadInput(name, _argv(variant), f"data.data_dir: {file} is not a {title}", setup=setup)


CASES = [
    _case("truncated-pickle", f"{CIFAR10}/data_batch_1", "truncated"),
    _case("random-bytes", f"{CIFAR10}/test_batch", "random_bytes"),
    _case("empty-file", f"{CIFAR10}/data_batch_2", "empty_file"),
    BadInput(
        "missing-file",
        _argv("cifar10"),
        f"data.data_dir: cifar10 not found, expected {CIFAR10}/{{data_batch_3}}",
        setup="missing_file",
    ),
    _case("pickle-of-a-list", f"{CIFAR10}/data_batch_4", "a_list"),
    _case("no-labels-key", f"{CIFAR10}/data_batch_5", "no_labels"),
    _case("rows-of-1024-bytes", f"{CIFAR10}/data_batch_1", "short_rows"),
    _case("float-pixels", f"{CIFAR10}/test_batch", "float_pixels"),
    _case("pixels-as-a-list", f"{CIFAR10}/data_batch_2", "pixels_as_list"),
    _case("label-out-of-range", f"{CIFAR10}/data_batch_3", "label_out_of_range"),
    _case("fewer-labels-than-images", f"{CIFAR10}/data_batch_4", "label_missing_one"),
    _case("labels-as-text", f"{CIFAR10}/data_batch_5", "labels_as_text"),
    _case("cifar100-without-fine-labels", f"{CIFAR100}/train", "cifar100_without_fine_labels", "cifar100"),
]

# what each message must say after the file name: the problem found
REASONS = {
    "truncated-pickle": "UnpicklingError: pickle data was truncated",
    "random-bytes": "UnpicklingError",
    "empty-file": "EOFError: Ran out of input",
    "missing-file": "(the 'python version' archive",
    "pickle-of-a-list": ": it holds a list",
    "no-labels-key": ": no 'labels' key",
    "rows-of-1024-bytes": ": 'data' is uint8 (6, 1024)",
    "float-pixels": ": 'data' is float64 (10, 3072)",
    "pixels-as-a-list": ": 'data' is a list, not a numpy array",
    "label-out-of-range": ": 1 label(s) outside 0..9, the first 10",
    "fewer-labels-than-images": ": 5 labels for 6 images",
    "labels-as-text": ": 'labels' is <U1 (6,), not a list of integers",
    "cifar100-without-fine-labels": ": no 'fine_labels' key",
}


# each CLI case starts a run (~8 s of imports); one per kind of failure goes the whole way, every case is
# checked at the reader below
THROUGH_THE_CLI = ("truncated-pickle", "label-out-of-range")


@pytest.mark.parametrize("case", [c for c in CASES if c.name in THROUGH_THE_CLI], ids=str)
def test_bad_cifar_files_stop_the_run_in_one_line(case: BadInput, tmp_path: Path) -> None:
    SETUPS[case.setup](tmp_path)
    assert_refused(case, tmp_path, tmp_path / DATA)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_reader_names_the_file_and_the_problem(case: BadInput, tmp_path: Path) -> None:
    SETUPS[case.setup](tmp_path)
    variant = case.argv[0].removeprefix("data=")
    with pytest.raises(ValueError) as refused:
        read_cifar(tmp_path / DATA, variant)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("data.data_dir: ")
    assert case.mentions.replace(f"{DATA}/", f"{tmp_path / DATA}/") in message
    assert REASONS[case.name] in message


# ------------------------------------------------------------------------------------------ data=tabular

TABLES = "tables"  # the folder, under the work folder, that the tabular cases write their files to


def _tabular_argv(*overrides: str) -> list[str]:
    return ["data=tabular", *overrides, "method=teacher", "trainer.max_epochs=1"]


def _write_table(name: str, text: str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / TABLES).mkdir(parents=True, exist_ok=True)
        (work / TABLES / name).write_text(text)

    return setup


def _npz_without_x(work: Path) -> None:
    (work / TABLES).mkdir(parents=True, exist_ok=True)
    np.savez(work / TABLES / "no_x.npz", y=np.arange(4) % 2)


def _npz_val_only_class(work: Path) -> None:
    (work / TABLES).mkdir(parents=True, exist_ok=True)
    labels = {"train": ["a", "b"] * 4, "val": ["a", "b", "c"], "test": ["a", "b"]}
    arrays = {f"y_{split}": np.array(y) for split, y in labels.items()}
    arrays |= {f"x_{split}": np.zeros((len(y), 2)) for split, y in labels.items()}
    np.savez(work / TABLES / "val_only.npz", **arrays)


TABULAR_SETUPS: dict[str, Callable[[Path], None]] = {
    "nothing": lambda work: (work / TABLES).mkdir(parents=True, exist_ok=True),
    "npz_without_x": _npz_without_x,
    "csv_without_label": _write_table("no_label.csv", "a,b\n1,2\n3,4\n"),
    "csv_text_feature": _write_table("text.csv", "size,color,label\n1,red,x\n2,blue,y\n"),
    "csv_one_class": _write_table("one_class.csv", "f,label\n1,a\n2,a\n3,a\n"),
    "csv_empty_label": _write_table("empty_label.csv", "f,label\n1,a\n2,b\n3,\n4,a\n"),
    "npz_val_only_class": _npz_val_only_class,
}

TABULAR_CASES = [
    BadInput(
        "tabular-unknown-table",
        _tabular_argv("data.source=sklearn:mnist"),
        "data.source: unknown table 'sklearn:mnist'; known: wine, iris, breast_cancer, digits",
        setup="nothing",
    ),
    BadInput(
        "tabular-not-npz-or-csv",
        _tabular_argv(f"data.source={TABLES}/table.xlsx"),
        "data.source: must be sklearn:<name> (wine, iris, breast_cancer, digits), a .npz file or a .csv file",
        setup="nothing",
    ),
    BadInput(
        "tabular-missing-file",
        _tabular_argv(f"data.source={TABLES}/absent.npz"),
        f"data.source: file not found: {{work}}/{TABLES}/absent.npz",
        setup="nothing",
    ),
    BadInput(
        "tabular-npz-without-x",
        _tabular_argv(f"data.source={TABLES}/no_x.npz"),
        f"data.source: {{work}}/{TABLES}/no_x.npz has no array x (it holds 'y')",
        setup="npz_without_x",
    ),
    BadInput(
        "tabular-csv-without-label-column",
        _tabular_argv(f"data.source={TABLES}/no_label.csv"),
        f"data.label_column: 'label' is not a column of {{work}}/{TABLES}/no_label.csv "
        "(its columns: 'a', 'b')",
        setup="csv_without_label",
    ),
    BadInput(
        "tabular-csv-text-feature",
        _tabular_argv(f"data.source={TABLES}/text.csv"),
        f"data.source: {{work}}/{TABLES}/text.csv: feature column 'color' is not numeric (line 2: 'red')",
        setup="csv_text_feature",
    ),
    BadInput(
        "tabular-one-class",
        _tabular_argv(f"data.source={TABLES}/one_class.csv"),
        "has only the class 'a'; a classification table needs at least 2 classes",
        setup="csv_one_class",
    ),
    BadInput(
        "tabular-csv-empty-label",
        _tabular_argv(f"data.source={TABLES}/empty_label.csv"),
        f"data.source: {{work}}/{TABLES}/empty_label.csv line 4 has an empty label (column 'label'",
        setup="csv_empty_label",
    ),
    BadInput(
        "tabular-npz-val-only-class",
        _tabular_argv(f"data.source={TABLES}/val_only.npz"),
        f"data.source: {{work}}/{TABLES}/val_only.npz: no training example has the class(es) 'c' (in val)",
        setup="npz_val_only_class",
    ),
    BadInput(
        "tabular-unseen-classes-unknown",
        _tabular_argv("data.unseen_classes=drop"),
        "data.unseen_classes must be one of refuse, keep (got 'drop')",
        setup="nothing",
    ),
    BadInput(
        "tabular-val-fraction-out-of-range",
        _tabular_argv("data.val_fraction=1.5"),
        "data.val_fraction must be in (0, 1) (got 1.5)",
        setup="nothing",
    ),
    BadInput(
        "tabular-fractions-sum-to-1",
        _tabular_argv("data.val_fraction=0.5", "data.test_fraction=0.5"),
        "data.val_fraction + data.test_fraction must be < 1",
        setup="nothing",
    ),
]

# a relative path through the real command (resolved against the folder dlab starts in), and a file refused
TABULAR_THROUGH_THE_CLI = ("tabular-missing-file", "tabular-csv-text-feature", "tabular-csv-empty-label")


def _in(case: BadInput, work: Path) -> BadInput:
    """``case`` with the work folder put in its message and in its relative paths (made absolute)."""
    argv = [arg.replace(f"={TABLES}/", f"={work / TABLES}/") for arg in case.argv]
    return BadInput(case.name, argv, case.mentions.replace("{work}", str(work)), setup=case.setup)


@pytest.mark.parametrize("case", [c for c in TABULAR_CASES if c.name in TABULAR_THROUGH_THE_CLI], ids=str)
def test_bad_tables_stop_the_run_in_one_line(case: BadInput, tmp_path: Path) -> None:
    TABULAR_SETUPS[case.setup](tmp_path)
    work = tmp_path.resolve()  # what os.getcwd() gives the command
    assert_refused(BadInput(case.name, case.argv, _in(case, work).mentions), tmp_path, tmp_path / TABLES)


@pytest.mark.parametrize("case", TABULAR_CASES, ids=str)
def test_the_tabular_module_names_the_key_and_the_problem(case: BadInput, tmp_path: Path) -> None:
    from divergence_lab.ground.errors import ConfigError
    from divergence_lab.run.pipeline import build_datamodule

    TABULAR_SETUPS[case.setup](tmp_path)
    case = _in(case, tmp_path)
    with pytest.raises(ConfigError) as refused:
        build_datamodule(compose_config(case.argv))
    message = str(refused.value)
    assert "\n" not in message and message.startswith("data."), message
    assert case.mentions in message, message
