"""The content identity of the files a data config reads, for the run and sweep fingerprints.

A run folder is keyed by its config (:mod:`divergence_lab.run.fingerprint`); a config names its data by a
path, so editing a file would leave the key as it was. :func:`content_settings` adds one entry per file
(or folder) the data module of a ``data`` config reads, ``data.content:<path as configured>`` -> the
SHA-256 of its bytes, so that an edited file refuses the folder like any other change of config.

It runs in the pre-flight, before Hydra starts: it imports no deep-learning framework and loads no
dataset. Which paths a data module reads is declared here, per data module class (:data:`SOURCE_HOOKS`,
keyed by the config's ``_target_``, as importing the classes would import torch):

* ``tabular``: ``source`` when it is a file (not ``sklearn:<name>``);
* CIFAR: the training and test batches of the ``variant`` under ``data_dir``;
* GLUE: the ``task``'s ``train.tsv`` and ``dev.tsv`` under ``data_dir``, and the ``tokenizer`` folder's
  tokenizer files (:data:`TOKENIZER_FILES`: not the weights of a model folder used as tokenizer folder);
* language-model data: the ``path`` (the three ``.jsonl`` files, or the folder ``save_to_disk`` wrote) and
  the ``tokenizer`` folder's tokenizer files;
* GCD: the sources of its ``base`` data config;
* embedded or generated data (digits, synthetic tables and texts, ``sklearn:<name>``): none.

Any other ``_target_`` (a user's data module) falls back to :func:`generic_sources`: every string under a
key named in :data:`PATH_KEYS`, at any depth, that names an existing file or folder.

A relative path is resolved against the directory ``dlab`` was started from (as the data modules do, with
Hydra's ``to_absolute_path``); ``~`` is expanded. A path that does not exist gets no entry: the data module
refuses it when the run starts. A file's digest is the SHA-256 of its bytes; a folder's is the SHA-256 of
the sorted list of (relative path, file digest) of every file under it (of the files read there, for a
tokenizer folder).

Digests are cached in ``<cache home>/divergence_lab/content_hashes.json`` (``$XDG_CACHE_HOME`` or
``~/.cache``), by absolute path, size and modification time (ns), so an unchanged file is read once. A file
modified within :data:`RACY_WINDOW_S` of being hashed is not cached (an edit in the same clock tick would
keep its size and time). The cache is written atomically; a missing, corrupt or read-only cache only costs
the hashing again.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from divergence_lab.ground.paths import PACKAGE_FOLDER, user_cache_home

CONTENT_PREFIX = "data.content:"  # a source's entry in a fingerprint: data.content:<path as configured>
CACHE_FILE = "content_hashes.json"
CHUNK_BYTES = 1 << 20  # bytes read at a time while hashing
RACY_WINDOW_S = 2.0  # a file modified this recently is hashed but not cached
SKLEARN_PREFIX = "sklearn:"  # a tabular source bundled with scikit-learn: no file
# keys that name a file or folder in a data config of an unknown data module class
PATH_KEYS = ("source", "path", "data_dir", "tokenizer", "file", "files", "root")
# keys of a data config that choose which files are read (a sweep over one of them reads other files per job)
SOURCE_KEYS = (*PATH_KEYS, "variant", "task", "base", "_target_")
# what each CIFAR variant reads under data_dir (divergence_lab.data.cifar.LAYOUT; a test keeps them equal)
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")),
    "cifar100": ("cifar-100-python", ("train", "test")),
}
# each GLUE task's folder under data_dir and the files read there (divergence_lab.data.glue; a test checks)
GLUE_FOLDERS = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "qnli": "QNLI", "wnli": "WNLI"}
GLUE_FILES = ("train.tsv", "dev.tsv")
JSONL_FILES = ("train.jsonl", "validation.jsonl", "test.jsonl")
JSONL_KEYS = ("train", "validation", "test")  # the keys of a data.path mapping of jsonl files
# the files a tokenizer is loaded from in its folder (save_pretrained): a model folder used as the
# tokenizer folder keeps its weights out of the data's content
TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "*.model",
    "config.json",
)


class Source(NamedTuple):
    """A file or folder a data module reads: its path as configured (relative to the launch directory, or
    absolute), and for a folder the name patterns of the files read there (empty: every file)."""

    path: str
    names: tuple[str, ...] = ()


SourceHook = Callable[[Mapping[str, Any]], list[Source]]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _joined(folder: Any, *parts: str) -> Source | None:
    """The source ``folder/parts`` (as configured); None when ``folder`` is not a string."""
    base = _text(folder)
    return None if base is None else Source("/".join([base.rstrip("/"), *parts]))


def tabular_sources(data: Mapping[str, Any]) -> list[Source]:
    """``TabularDataModule``: the ``source`` file (none for ``sklearn:<name>``)."""
    source = _text(data.get("source"))
    return [] if source is None or source.startswith(SKLEARN_PREFIX) else [Source(source)]


def cifar_sources(data: Mapping[str, Any]) -> list[Source]:
    """``CIFARDataModule``: the ``variant``'s training and test batches under ``data_dir``."""
    variant = data.get("variant", "cifar10")
    if variant not in CIFAR_FILES:
        return []
    folder, names = CIFAR_FILES[variant]
    return [s for name in names if (s := _joined(data.get("data_dir", "data"), folder, name)) is not None]


def tokenizer_sources(data: Mapping[str, Any]) -> list[Source]:
    """The tokenizer files (:data:`TOKENIZER_FILES`) of the ``tokenizer`` folder, when one is configured
    (null: a tokenizer built from the data)."""
    tokenizer = _text(data.get("tokenizer"))
    return [] if tokenizer is None else [Source(tokenizer, TOKENIZER_FILES)]


def glue_sources(data: Mapping[str, Any]) -> list[Source]:
    """``GlueDataModule``: the ``task``'s ``train.tsv`` and ``dev.tsv`` under ``data_dir``; the tokenizer."""
    task = data.get("task", "sst2")
    files = []
    if task in GLUE_FOLDERS:
        root = data.get("data_dir", "data/glue")
        files = [s for name in GLUE_FILES if (s := _joined(root, GLUE_FOLDERS[task], name)) is not None]
    return files + tokenizer_sources(data)


def jsonl_sources(data: Mapping[str, Any]) -> list[Source]:
    """``JsonlLMDataModule``: the three ``.jsonl`` files of the ``path`` folder (or of a ``path`` mapping of
    ``train``, ``validation`` and ``test`` files); the tokenizer."""
    path = data.get("path")
    if isinstance(path, Mapping):
        files = [Source(file) for key in JSONL_KEYS if (file := _text(path.get(key))) is not None]
    else:
        files = [s for name in JSONL_FILES if (s := _joined(path, name)) is not None]
    return files + tokenizer_sources(data)


def saved_sources(data: Mapping[str, Any]) -> list[Source]:
    """``SavedLMDataModule``: the folder ``save_to_disk`` wrote (``path``); the tokenizer."""
    path = _text(data.get("path"))
    return ([] if path is None else [Source(path)]) + tokenizer_sources(data)


def gcd_sources(data: Mapping[str, Any]) -> list[Source]:
    """``GCDDataModule``: the sources of its ``base`` data config."""
    base = data.get("base")
    return data_sources(base) if isinstance(base, Mapping) else []


def no_sources(data: Mapping[str, Any]) -> list[Source]:
    """Embedded or generated data: no file is read."""
    return []


SOURCE_HOOKS: dict[str, SourceHook] = {
    "divergence_lab.data.tabular.TabularDataModule": tabular_sources,
    "divergence_lab.data.cifar.CIFARDataModule": cifar_sources,
    "divergence_lab.data.glue.GlueDataModule": glue_sources,
    "divergence_lab.data.text.lm_datamodule.JsonlLMDataModule": jsonl_sources,
    "divergence_lab.data.text.lm_datamodule.SavedLMDataModule": saved_sources,
    "divergence_lab.data.text.lm_datamodule.SyntheticLMDataModule": tokenizer_sources,
    "divergence_lab.data.gcd.GCDDataModule": gcd_sources,
    "divergence_lab.data.digits.DigitsDataModule": no_sources,
    "divergence_lab.data.synthetic.SyntheticDataModule": no_sources,
    "divergence_lab.data.synthetic_text.SyntheticTextDataModule": no_sources,
}


def generic_sources(data: Mapping[str, Any]) -> list[Source]:
    """An unknown data module's sources: every string (or list of strings) under a key of
    :data:`PATH_KEYS` that names an existing file or folder; nested configs are searched too, a nested
    ``_target_`` with a declared hook through that hook."""
    found: list[Source] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            found += data_sources(value)
        elif key in PATH_KEYS:
            values = value if isinstance(value, list | tuple) else [value]
            found += [Source(text) for v in values if (text := _text(v)) and resolve(text).exists()]
    return found


def data_sources(data: Mapping[str, Any]) -> list[Source]:
    """Every file or folder (:class:`Source`) the data module of ``data`` (a resolved config mapping)
    reads: through the hook of its ``_target_`` (:data:`SOURCE_HOOKS`), else :func:`generic_sources`."""
    hook = SOURCE_HOOKS.get(str(data.get("_target_", "")), generic_sources)
    return hook(data)


def resolve(path: str) -> Path:
    """``path`` made absolute as the data modules do: ``~`` expanded, a relative path against the directory
    ``dlab`` was started from (Hydra's ``runtime.cwd``; the current directory before Hydra starts)."""
    from hydra.utils import to_absolute_path

    return Path(to_absolute_path(str(Path(path).expanduser())))


def cache_path() -> Path:
    """``<cache home>/divergence_lab/content_hashes.json`` (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    return user_cache_home() / PACKAGE_FOLDER / CACHE_FILE


class DigestCache:
    """File digests by absolute path, valid while the file's size and modification time are unchanged."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = cache_path() if path is None else path
        self.entries = self._load()
        self.changed = False

    def _load(self) -> dict[str, list[Any]]:
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return entries if isinstance(entries, dict) else {}

    def file_digest(self, path: Path) -> str:
        """The SHA-256 (hex) of the bytes of the file ``path``: from the cache when its size and
        modification time are those recorded, else read (and recorded unless modified just now)."""
        stat = path.stat()
        key = str(path)
        entry = self.entries.get(key)
        if isinstance(entry, list) and entry[:2] == [stat.st_size, stat.st_mtime_ns] and len(entry) == 3:
            return str(entry[2])
        digest = hash_file(path)
        if time.time() - stat.st_mtime_ns / 1e9 > RACY_WINDOW_S:
            self.entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
            self.changed = True
        return digest

    def digest(self, path: Path, names: tuple[str, ...] = ()) -> str:
        """The digest of a file, or of a folder: SHA-256 of the sorted ``[relative path, file digest]`` list
        of every file under it (whose name matches one of the patterns ``names``, when given)."""
        if path.is_file():
            return self.file_digest(path)
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and (not names or any(fnmatch.fnmatch(p.name, n) for n in names))
        )
        listing = [[p.relative_to(path).as_posix(), self.file_digest(p)] for p in files]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()

    def save(self) -> None:
        """Write the cache atomically if it changed (entries of files that no longer exist are dropped);
        a cache that cannot be written is left as it is."""
        if not self.changed:
            return
        entries = {key: entry for key, entry in self.entries.items() if Path(key).is_file()}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        except OSError:
            return
        try:
            with os.fdopen(handle, "w") as tmp:
                json.dump(entries, tmp)
            os.replace(temporary, self.path)
        except OSError:
            Path(temporary).unlink(missing_ok=True)
            return
        self.changed = False


def hash_file(path: Path) -> str:
    """The SHA-256 (hex) of the bytes of the file ``path``, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def content_settings(data: Any, cache: DigestCache | None = None) -> dict[str, str]:
    """``{"data.content:<path as configured>": sha256}`` for every existing file or folder the data config
    ``data`` (a resolved mapping) reads; empty for embedded or generated data and for missing paths."""
    if not isinstance(data, Mapping):
        return {}
    store = DigestCache() if cache is None else cache
    settings = {}
    for source in data_sources(data):
        target = resolve(source.path)
        try:
            if target.exists():
                settings[CONTENT_PREFIX + source.path] = store.digest(target, source.names)
        except OSError:  # unreadable: the data module names it when the run starts
            continue
    if cache is None:
        store.save()
    return settings


def is_content_key(key: str) -> bool:
    """Whether a fingerprint key is a data source's content entry."""
    return key.startswith(CONTENT_PREFIX)


def reads_other_sources(swept_keys: Iterable[str]) -> bool:
    """Whether sweeping ``swept_keys`` (override keys) can change which files a job's data module reads: the
    ``data`` group itself, or a data key of :data:`SOURCE_KEYS` (``data.source``, ``data.base.data_dir``)."""
    for key in swept_keys:
        parts = key.lstrip("+~").split(".")
        if parts[0] == "data" and (len(parts) == 1 or any(part in SOURCE_KEYS for part in parts[1:])):
            return True
    return False
