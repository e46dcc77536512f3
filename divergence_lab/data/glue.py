"""GLUE classification tasks read from the TSV files GLUE distributes (nothing is downloaded).

Expected layout under ``data_dir`` (as GLUE's download script writes it), the header of each task's
``train.tsv`` and ``dev.tsv``, and its labels::

    SST-2/   sentence  label                                   0, 1
    MRPC/    Quality  #1 ID  #2 ID  #1 String  #2 String       0, 1
    RTE/     index  sentence1  sentence2  label                entailment, not_entailment
    QNLI/    index  question  sentence  label                  entailment, not_entailment
    WNLI/    index  sentence1  sentence2  label                0, 1

Fields are tab-separated with no quoting (a quote character is text), the first line is the header, and
columns are found by their header names. GLUE's ``test.tsv`` has no labels, so the splits are: test = the
labelled ``dev.tsv``; val = a stratified part (``val_fraction``, fixed by ``split_seed``) carved out of
``train.tsv`` for model selection; train = the rest of ``train.tsv``. Labels are numbered in the order
listed above (RTE and QNLI: entailment 0, not_entailment 1).

Texts are tokenized with the tokenizer of the local folder ``tokenizer`` (a pair task as a text pair) into
token rows of ``max_length`` (:mod:`divergence_lab.data.text_classification`). A missing file, a header
without the task's columns, or a malformed row (wrong number of fields, an unknown label, an empty text) is
refused with one line naming ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from divergence_lab.data.tensor_datamodule import stratified_split
from divergence_lab.data.text_classification import (
    TokenizedDataModule,
    check_max_length,
    encode,
    local_tokenizer,
    word_level_tokenizer,
)
from divergence_lab.ground.errors import ConfigError


@dataclass(frozen=True)
class GlueTask:
    """Where a task's files are and which header columns hold its texts and label."""

    folder: str
    header: tuple[str, ...]  # every column of train.tsv and dev.tsv, in file order
    text_columns: tuple[str, ...]  # one column, or the two texts of a pair
    label_column: str
    labels: tuple[str, ...]  # the label values in class order


GLUE_TASKS = {
    "sst2": GlueTask("SST-2", ("sentence", "label"), ("sentence",), "label", ("0", "1")),
    "mrpc": GlueTask(
        "MRPC",
        ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        ("#1 String", "#2 String"),
        "Quality",
        ("0", "1"),
    ),
    "rte": GlueTask(
        "RTE",
        ("index", "sentence1", "sentence2", "label"),
        ("sentence1", "sentence2"),
        "label",
        ("entailment", "not_entailment"),
    ),
    "qnli": GlueTask(
        "QNLI",
        ("index", "question", "sentence", "label"),
        ("question", "sentence"),
        "label",
        ("entailment", "not_entailment"),
    ),
    "wnli": GlueTask(
        "WNLI", ("index", "sentence1", "sentence2", "label"), ("sentence1", "sentence2"), "label", ("0", "1")
    ),
}
SPLIT_FILES = {"train": "train.tsv", "test": "dev.tsv"}  # GLUE's test.tsv has no labels
SAMPLE_WORDS = ("a", "fine", "film", "the", "plot", "is", "thin", "it", "was", "good", "not", "dull")
SAMPLE_TEXT_WORDS = 4


@dataclass
class GlueSplit:
    """The rows of one file: the texts of each text column, and the labels (class indices)."""

    texts: list[list[str]]
    labels: list[int]


def task_named(name: object) -> GlueTask:
    """The :class:`GlueTask` of ``data.task``; an unknown name is refused naming the known ones."""
    if name not in GLUE_TASKS:
        raise ConfigError(f"data.task must be one of {', '.join(GLUE_TASKS)} (got {name!r})")
    return GLUE_TASKS[str(name)]


def _refuse(path: Path, line: int, reason: str) -> ConfigError:
    return ConfigError(f"data.data_dir: {path}:{line}: {reason}")


def read_glue_file(path: Path, task: GlueTask) -> GlueSplit:
    """The texts and labels of one GLUE TSV file of ``task``; see the module docstring for what is refused."""
    if not path.is_file():
        raise ConfigError(
            f"data.data_dir: {path} not found (GLUE's {task.folder} folder with train.tsv and dev.tsv)"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"data.data_dir: {path} is not UTF-8 text ({error.reason})") from None
    # rows end at "\n" (or "\r\n") only: texts may hold other Unicode line separators
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")]
    if not lines[0]:
        raise _refuse(path, 1, "empty header line")
    header = lines[0].split("\t")
    wanted = [*task.text_columns, task.label_column]
    absent = [column for column in wanted if column not in header]
    if absent:
        raise _refuse(
            path,
            1,
            f"the header has no column {', '.join(map(repr, absent))} (is this GLUE's {task.folder}?)",
        )
    text_index = [header.index(column) for column in task.text_columns]
    label_index = header.index(task.label_column)
    label_of = {value: index for index, value in enumerate(task.labels)}
    split = GlueSplit([[] for _ in text_index], [])
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise _refuse(
                path, number, f"{len(fields)} tab-separated fields where the header has {len(header)}"
            )
        label = fields[label_index]
        if label not in label_of:
            allowed = ", ".join(task.labels)
            raise _refuse(
                path, number, f"label {label!r} in column {task.label_column!r} is not one of {allowed}"
            )
        for position, (column, index) in enumerate(zip(task.text_columns, text_index, strict=True)):
            if not fields[index].strip():
                raise _refuse(path, number, f"empty text in column {column!r}")
            split.texts[position].append(fields[index])
        split.labels.append(label_of[label])
    if not split.labels:
        raise _refuse(path, 2, "no rows after the header")
    return split


def write_glue(root: str | Path, task: str, train_rows: int = 12, dev_rows: int = 4) -> Path:
    """Write tiny ``train.tsv`` and ``dev.tsv`` of ``task`` in GLUE's layout under ``root`` (texts from
    :data:`SAMPLE_WORDS`, labels cycling in class order) and a word-level tokenizer of those words in
    ``root/tokenizer``; return the tokenizer folder. For tests and checks without GLUE's files."""
    spec = task_named(task)
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.tsv", train_rows), ("dev.tsv", dev_rows)):
        lines = ["\t".join(spec.header)]
        for row in range(count):
            fields = dict.fromkeys(spec.header, str(row))
            for shift, column in enumerate(spec.text_columns):
                start = row + shift
                words = (SAMPLE_WORDS[(start + k) % len(SAMPLE_WORDS)] for k in range(SAMPLE_TEXT_WORDS))
                fields[column] = " ".join(words)
            fields[spec.label_column] = spec.labels[row % len(spec.labels)]
            lines.append("\t".join(fields[column] for column in spec.header))
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer_folder = Path(root) / "tokenizer"
    word_level_tokenizer([" ".join(SAMPLE_WORDS)]).save_pretrained(tokenizer_folder)
    return tokenizer_folder


class GlueDataModule(TokenizedDataModule):
    """One GLUE task as token rows ``(N, 3, max_length)``; see the module docstring."""

    def __init__(
        self,
        tokenizer: str,
        task: str = "sst2",
        data_dir: str = "data/glue",
        max_length: int = 128,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        seed: int = 0,
        label_noise: float = 0.0,
        noise_seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, seed, label_noise, noise_seed)
        self.task = task_named(task)
        check_max_length(max_length)
        if isinstance(val_fraction, bool) or not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1) (got {val_fraction!r})")
        self.folder = Path(data_dir).expanduser() / self.task.folder
        self.tokenizer_path = tokenizer
        self.max_length = max_length
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    def setup(self, stage: str | None = None) -> None:
        """Read, split and tokenize; ``num_classes`` is the task's, even when the files miss a label."""
        super().setup(stage)
        self.num_classes = len(self.task.labels)

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        files = {split: read_glue_file(self.folder / name, self.task) for split, name in SPLIT_FILES.items()}
        self.tokenizer = local_tokenizer(self.tokenizer_path)
        encoded = {}
        for split, rows in files.items():
            pairs = rows.texts[1] if len(rows.texts) > 1 else None
            tokens = encode(self.tokenizer, rows.texts[0], pairs, self.max_length)
            encoded[split] = (tokens, torch.tensor(rows.labels, dtype=torch.long))
        tokens, labels = encoded.pop("train")
        train, val, _ = stratified_split(labels, (self.val_fraction, 0.0), self.split_seed)
        return {"train": (tokens[train], labels[train]), "val": (tokens[val], labels[val]), **encoded}
