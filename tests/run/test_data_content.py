"""The content of the data in the run and sweep fingerprints: which files a data config reads, their
digests and the digest cache, and the refusal of a folder made from data that has been edited since."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from divergence_lab.data import content
from divergence_lab.data.content import (
    CONTENT_PREFIX,
    RACY_WINDOW_S,
    DigestCache,
    Source,
    content_settings,
    data_sources,
    reads_other_sources,
)
from divergence_lab.ground.errors import ConfigError
from divergence_lab.ground.record_format import RUN_FINGERPRINT_FILE, stored_run_settings
from divergence_lab.run.fingerprint import (
    check_run_dir,
    content_changes,
    differences,
    fingerprint_settings,
    write_fingerprint,
)
from divergence_lab.sweep.growth import record_sweep
from tests.conftest import compose_config

TABULAR = "divergence_lab.data.tabular.TabularDataModule"
OLD_S = 1_000_000  # a modification time long past (s since the epoch): outside the racy window


def _table(path: Path, text: str = "f,label\n1,a\n2,b\n", mtime_s: int | None = OLD_S) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mtime_s is not None:
        os.utime(path, (mtime_s, mtime_s))
    return path


def _tabular(source: str) -> dict:
    return {"_target_": TABULAR, "source": source}


@pytest.fixture
def launched_here(tmp_path: Path, monkeypatch) -> Path:
    """``dlab`` started in ``tmp_path``, before Hydra starts (an earlier in-process run may have set it)."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """The files whose bytes are hashed, in order (the cache's misses)."""
    hashed: list[Path] = []
    real = content.hash_file

    def counting(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(content, "hash_file", counting)
    return hashed


def test_the_digest_changes_with_one_byte(tmp_path: Path) -> None:
    path = _table(tmp_path / "t.csv")
    cache = DigestCache(tmp_path / "cache.json")
    first = content_settings(_tabular(str(path)), cache)
    assert list(first) == [f"{CONTENT_PREFIX}{path}"] and len(first[f"{CONTENT_PREFIX}{path}"]) == 64
    _table(path, "f,label\n1,a\n3,b\n", mtime_s=OLD_S + 1)  # one byte, same size
    assert content_settings(_tabular(str(path)), cache) != first


def test_an_unchanged_file_is_read_once_and_a_touched_one_again(tmp_path: Path, reads) -> None:
    path = _table(tmp_path / "t.csv")
    cache_file = tmp_path / "cache" / "hashes.json"
    data = _tabular(str(path))
    first = DigestCache(cache_file)
    digest = content_settings(data, first)
    first.save()
    assert reads == [path] and cache_file.is_file()
    assert content_settings(data, DigestCache(cache_file)) == digest  # a new process: from the file
    assert reads == [path]
    _table(path, "f,label\n1,a\n9,b\n", mtime_s=OLD_S + 5)  # same size, other time: read again
    changed = content_settings(data, DigestCache(cache_file))
    assert reads == [path, path] and changed != digest
    os.utime(path, (OLD_S + 6, OLD_S + 6))  # touched only: read again, the same digest
    assert content_settings(data, DigestCache(cache_file)) == changed and len(reads) == 3


def test_a_file_modified_just_now_is_not_cached(tmp_path: Path, reads) -> None:
    path = _table(tmp_path / "t.csv", mtime_s=None)
    assert time.time() - path.stat().st_mtime < RACY_WINDOW_S
    cache = DigestCache(tmp_path / "cache.json")
    content_settings(_tabular(str(path)), cache)
    content_settings(_tabular(str(path)), cache)
    assert reads == [path, path]


def test_an_unwritable_or_corrupt_cache_only_costs_the_hashing(tmp_path: Path, monkeypatch, reads) -> None:
    path = _table(tmp_path / "t.csv")
    expected = content_settings(_tabular(str(path)), DigestCache(tmp_path / "scratch.json"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(content, "cache_path", lambda: blocker / "hashes.json")  # its folder cannot exist
    assert content_settings(_tabular(str(path))) == expected
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    monkeypatch.setattr(content, "cache_path", lambda: corrupt)
    assert content_settings(_tabular(str(path))) == expected
    assert str(path) in json.loads(corrupt.read_text())  # rewritten, whole
    assert len(reads) == 3


def test_sources_of_each_kind_of_data(tmp_path: Path, launched_here: Path) -> None:
    assert data_sources(_tabular("sklearn:wine")) == []
    assert data_sources({"_target_": "divergence_lab.data.digits.DigitsDataModule"}) == []
    gcd = {
        "_target_": "divergence_lab.data.gcd.GCDDataModule",
        "base": {"_target_": TABULAR, "source": "t.csv"},
    }
    assert data_sources(gcd) == [Source("t.csv")]
    cifar = {"_target_": "divergence_lab.data.cifar.CIFARDataModule", "data_dir": "d", "variant": "cifar100"}
    assert data_sources(cifar) == [Source("d/cifar-100-python/train"), Source("d/cifar-100-python/test")]
    glue = {
        "_target_": "divergence_lab.data.glue.GlueDataModule",
        "data_dir": "g",
        "task": "rte",
        "tokenizer": "tok",
    }
    assert [source.path for source in data_sources(glue)] == ["g/RTE/train.tsv", "g/RTE/dev.tsv", "tok"]
    jsonl = {
        "_target_": "divergence_lab.data.text.lm_datamodule.JsonlLMDataModule",
        "path": "texts",
        "tokenizer": None,
    }
    assert [source.path for source in data_sources(jsonl)] == [
        f"texts/{n}.jsonl" for n in ("train", "validation", "test")
    ]
    _table(tmp_path / "mine" / "rows.txt")
    user = {"_target_": "my_lab.Rows", "path": "mine/rows.txt", "files": ["absent.txt"], "size": 3}
    assert data_sources(user) == [Source("mine/rows.txt")]  # existing paths under path keys


def test_the_declared_layouts_are_those_the_data_modules_read() -> None:
    from divergence_lab.data.cifar import LAYOUT
    from divergence_lab.data.glue import GLUE_TASKS, SPLIT_FILES

    assert {v: (layout.folder, (*layout.train_files, layout.test_file)) for v, layout in LAYOUT.items()} == (
        content.CIFAR_FILES
    )
    assert {name: task.folder for name, task in GLUE_TASKS.items()} == content.GLUE_FOLDERS
    assert set(SPLIT_FILES.values()) == set(content.GLUE_FILES)


def test_a_relative_source_resolves_against_the_launch_folder_and_a_missing_one_has_no_entry(
    tmp_path: Path, launched_here: Path, monkeypatch
) -> None:
    _table(tmp_path / "tables" / "t.csv")
    settings = content_settings(_tabular("tables/t.csv"), DigestCache(tmp_path / "c.json"))
    assert list(settings) == [f"{CONTENT_PREFIX}tables/t.csv"]
    assert content_settings(_tabular("tables/absent.csv"), DigestCache(tmp_path / "c.json")) == {}
    started = OmegaConf.create({"hydra": {"runtime": {"cwd": str(tmp_path)}}})
    monkeypatch.setattr(HydraConfig.instance(), "cfg", started)  # a run of Hydra started in tmp_path ...
    (tmp_path / "job").mkdir()
    monkeypatch.chdir(tmp_path / "job")  # ... that moved into its job folder
    assert content_settings(_tabular("tables/t.csv"), DigestCache(tmp_path / "c.json")) == settings


def test_a_folder_digest_covers_names_and_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    _table(folder / "train" / "a.arrow", "1")
    _table(folder / "state.json", "{}")
    cache = DigestCache(tmp_path / "c.json")
    first = cache.digest(folder)
    (folder / "state.json").rename(folder / "other.json")
    assert cache.digest(folder) != first
    (folder / "other.json").rename(folder / "state.json")
    assert cache.digest(folder) == first
    _table(folder / "train" / "a.arrow", "2", mtime_s=OLD_S + 1)
    assert cache.digest(folder) != first


def test_a_tokenizer_folder_counts_its_tokenizer_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "teacher"
    _table(folder / "tokenizer.json", "{}")
    _table(folder / "model.safetensors", "weights")
    data = {"_target_": "divergence_lab.data.glue.GlueDataModule", "tokenizer": str(folder), "task": "sst2"}
    first = content_settings(data, DigestCache(tmp_path / "c.json"))
    assert list(first) == [f"{CONTENT_PREFIX}{folder}"]  # the task's files are absent: no entry
    _table(folder / "model.safetensors", "other weights")
    assert content_settings(data, DigestCache(tmp_path / "c.json")) == first
    _table(folder / "tokenizer.json", '{"a": 1}')
    assert content_settings(data, DigestCache(tmp_path / "c.json")) != first


def test_a_run_folder_made_from_other_data_is_refused_naming_the_file(
    tmp_path: Path, launched_here: Path
) -> None:
    _table(tmp_path / "t.csv")
    cfg = compose_config(["data=tabular", "data.source=t.csv"])
    run_dir = tmp_path / "run"
    settings = fingerprint_settings(cfg)
    assert f"{CONTENT_PREFIX}t.csv" in settings
    write_fingerprint(run_dir / RUN_FINGERPRINT_FILE, settings)
    check_run_dir(run_dir, fingerprint_settings(cfg))  # the same data: accepted
    _table(tmp_path / "t.csv", "f,label\n1,a\n2,c\n", mtime_s=OLD_S + 1)
    with pytest.raises(ConfigError) as refused:
        check_run_dir(run_dir, fingerprint_settings(cfg))
    old, new = settings[f"{CONTENT_PREFIX}t.csv"][:8], fingerprint_settings(cfg)[f"{CONTENT_PREFIX}t.csv"][:8]
    assert str(refused.value) == (
        f"{run_dir} was made from other data: t.csv changed since (sha256 {old}… -> {new}…); restore it, "
        f"choose another hydra.run.dir=..., or add ckpt_path=fresh to move its contents to "
        f"{tmp_path / 'superseded'}/"
    )


def test_a_folder_without_content_entries_is_accepted(tmp_path: Path, launched_here: Path) -> None:
    _table(tmp_path / "t.csv")
    cfg = compose_config(["data=tabular", "data.source=t.csv"])
    old = {k: v for k, v in fingerprint_settings(cfg).items() if not k.startswith(CONTENT_PREFIX)}
    write_fingerprint(tmp_path / "run" / RUN_FINGERPRINT_FILE, old)
    check_run_dir(tmp_path / "run", fingerprint_settings(cfg))  # unknown content: accepted
    (tmp_path / "legacy").mkdir()
    (tmp_path / "legacy" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    stored = stored_run_settings(tmp_path / "legacy")
    assert stored is not None and not any(k.startswith(CONTENT_PREFIX) for k in stored)
    check_run_dir(tmp_path / "legacy", fingerprint_settings(cfg))


def test_content_entries_are_compared_only_where_both_sides_have_them() -> None:
    old = {"seed": 0, f"{CONTENT_PREFIX}a.csv": "1" * 64, f"{CONTENT_PREFIX}gone.csv": "2" * 64}
    new = {"seed": 0, f"{CONTENT_PREFIX}a.csv": "3" * 64, f"{CONTENT_PREFIX}new.csv": "4" * 64}
    assert differences(old, new) == []
    assert content_changes(old, new) == ["a.csv changed since (sha256 11111111… -> 33333333…)"]


def test_a_sweep_folder_made_from_other_data_is_refused(tmp_path: Path) -> None:
    key = f"{CONTENT_PREFIX}t.csv"
    settings = {"data.source": "t.csv", key: "a" * 64, "sweep:seed": "0,1"}
    record_sweep(tmp_path, settings)
    record_sweep(tmp_path, settings)  # the same sweep again
    with pytest.raises(
        ConfigError, match=r"was made from other data: t.csv changed since \(sha256 aaaaaaaa… "
    ):
        record_sweep(tmp_path, {**settings, key: "b" * 64})


def test_a_sweep_over_the_data_sources_records_no_content(tmp_path: Path) -> None:
    assert reads_other_sources(["data.source"]) and reads_other_sources(["data"])
    assert reads_other_sources(["+data.base.data_dir"]) and not reads_other_sources(
        ["data.label_noise", "seed"]
    )
    record_sweep(
        tmp_path, {"data.source": "x.csv", f"{CONTENT_PREFIX}x.csv": "a" * 64, "sweep:data.source": "a,b"}
    )
    stored = json.loads((tmp_path / "sweep_fingerprint.json").read_text())["settings"]
    assert not any(k.startswith(CONTENT_PREFIX) for k in stored)
