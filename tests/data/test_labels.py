"""Labels of a tabular source: an empty label is refused naming its line (CSV) or index (.npz); a class no
training example has is refused naming the class and the split, or kept with ``unseen_classes: keep``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from divergence_lab.data.tabular import TabularDataModule
from divergence_lab.ground.errors import ConfigError
from tests.conftest import run_training

ROWS_PER_CLASS = 12


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def _rows(classes: str = "abc") -> list[str]:
    return [f"{i}.5,{i % 7},{name}" for name in classes for i in range(ROWS_PER_CLASS)]


def _setup(**kwargs) -> TabularDataModule:
    dm = TabularDataModule(**kwargs)
    dm.setup()
    return dm


def _fixed_npz(path: Path, val_labels: list[str], test_labels: list[str]) -> Path:
    """Fixed splits whose training split holds the classes ``a`` and ``b`` only."""
    train = np.array(["a", "b"] * ROWS_PER_CLASS)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, labels in (("train", train), ("val", np.array(val_labels)), ("test", np.array(test_labels))):
        arrays[f"x_{split}"] = rng.normal(size=(len(labels), 3))
        arrays[f"y_{split}"] = labels
    np.savez(path, **arrays)
    return path


def test_an_empty_label_cell_is_refused_naming_its_line(tmp_path: Path) -> None:
    lines = ["size,weight,label", *_rows()]
    lines[5] = "5.5,3,"  # the file's line 6 (the header is line 1)
    lines.insert(3, "")  # a blank line before it: line numbers stay the file's own
    path = _csv(tmp_path / "t.csv", lines)
    with pytest.raises(ConfigError) as refused:
        _setup(source=str(path))
    message = str(refused.value)
    assert "\n" not in message and message.startswith("data.source: ")
    assert f"{path} line 7 has an empty label (column 'label'" in message


def test_a_blank_label_cell_counts_as_empty(tmp_path: Path) -> None:
    lines = ["size,weight,label", *_rows()]
    lines[2] = '1.5,1,"  "'
    with pytest.raises(ConfigError, match="line 3 has an empty label"):
        _setup(source=str(_csv(tmp_path / "t.csv", lines)))


def test_an_empty_string_label_of_an_npz_is_refused_naming_its_index(tmp_path: Path) -> None:
    y = np.array(["a", "b"] * ROWS_PER_CLASS)
    y[4] = ""
    np.savez(tmp_path / "t.npz", x=np.zeros((len(y), 2)), y=y)
    with pytest.raises(ConfigError, match=r"the label at index 4 \(0-based\) is empty"):
        _setup(source=str(tmp_path / "t.npz"))


@pytest.mark.parametrize(
    ("val", "test", "named"),
    [
        (["a", "b", "c"], ["a", "b"], "'c' (in val)"),
        (["a", "b"], ["a", "d"], "'d' (in test)"),
        (["a", "c"], ["b", "c"], "'c' (in val and test)"),
    ],
)
def test_a_class_only_in_val_or_test_is_refused_naming_class_and_split(
    tmp_path: Path, val: list[str], test: list[str], named: str
) -> None:
    path = _fixed_npz(tmp_path / "fixed.npz", val, test)
    with pytest.raises(ConfigError) as refused:
        _setup(source=str(path))
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"data.source: {path}: ")
    assert f"no training example has the class(es) {named}" in message
    assert "data.unseen_classes=keep" in message


def test_a_class_too_small_to_keep_a_training_example_after_the_split_is_refused(tmp_path: Path) -> None:
    # round(0.3 * 2) = 1 example of "rare" to val, 1 to test, none left to train
    lines = ["size,weight,label", *_rows("ab"), "1,1,rare", "2,2,rare"]
    path = _csv(tmp_path / "t.csv", lines)
    with pytest.raises(ConfigError, match=r"'rare' \(in val and test\)"):
        _setup(source=str(path), val_fraction=0.3, test_fraction=0.3)


def test_keep_serves_the_unseen_class_and_logs_one_warning(tmp_path: Path, caplog) -> None:
    path = _fixed_npz(tmp_path / "fixed.npz", ["a", "c"], ["b", "c"])
    with caplog.at_level(logging.WARNING, logger="divergence_lab.data.tabular"):
        dm = _setup(source=str(path), unseen_classes="keep")
    assert dm.num_classes == 3  # a, b and c: the output unit of c is kept
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert "'c' (in val and test)" in warnings[0] and "data.unseen_classes=keep" in warnings[0]


def test_an_unknown_unseen_classes_value_is_refused() -> None:
    with pytest.raises(ConfigError, match="data.unseen_classes must be one of refuse, keep"):
        TabularDataModule(unseen_classes="drop")


def test_a_run_with_keep_trains_on_a_table_with_a_test_only_class(tmp_path: Path) -> None:
    path = _fixed_npz(tmp_path / "fixed.npz", ["a", "b"], ["a", "b", "c"])
    overrides = ["data=tabular", f"data.source={path}", "data.unseen_classes=keep", "method=teacher"]
    record, _ = run_training(tmp_path, [*overrides, "trainer.max_epochs=1"])
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
