"""Text classification data: the GLUE reader on files in GLUE's layout, the synthetic task, tokenizers."""

import re

import numpy as np
import pytest
import torch

from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.glue import GLUE_TASKS, GlueDataModule, read_glue_file, task_named, write_glue
from divergence_lab.data.synthetic_text import (
    INTENSIFIERS,
    NEGATIONS,
    NEGATIVE,
    POSITIVE,
    SyntheticTextDataModule,
    TextTask,
    generate_splits,
)
from divergence_lab.data.text_classification import TOKEN_ROWS, encode, local_tokenizer, word_level_tokenizer
from divergence_lab.ground.errors import ConfigError
from tests.conftest import compose_config

SST2_HEADER = "sentence\tlabel"
RTE_HEADER = "index\tsentence1\tsentence2\tlabel"
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
WORDS = ["a", "fine", "film", ",", "but", "the", "plot", "is", "thin", "and", '"slow"', "it", "was", "good"]


def _write(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _sst2_rows(count, offset=0):
    return [f"{WORDS[(i + offset) % len(WORDS)]} film {i + offset}\t{i % 2}" for i in range(count)]


def _rte_rows(count):
    labels = ("entailment", "not_entailment")
    return [f"{i}\tthe plot is {i}\tit was {i}\t{labels[i % 2]}" for i in range(count)]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A word-level tokenizer saved in a local folder, as a model's tokenizer would be."""
    folder = tmp_path_factory.mktemp("tokenizer")
    vocabulary = [" ".join(WORDS), "the plot is it was film", " ".join(str(i) for i in range(40))]
    word_level_tokenizer(vocabulary).save_pretrained(folder)
    return folder


def _glue(tmp_path, tokenizer_dir, task="sst2", **overrides):
    return instantiate_datamodule(
        compose_config(
            [
                "data=glue",
                f"data.task={task}",
                f"data.data_dir={tmp_path}",
                f"data.tokenizer={tokenizer_dir}",
                "data.max_length=16",
                "data.val_fraction=0.25",
                *[f"data.{key}={value}" for key, value in overrides.items()],
            ]
        ).data,
        seed=0,
    )


def test_sst2_reads_train_and_dev_carves_a_seeded_val_split_and_tests_on_dev(tmp_path, tokenizer_dir):
    _write(tmp_path / "SST-2" / "train.tsv", SST2_HEADER, _sst2_rows(20))
    _write(tmp_path / "SST-2" / "dev.tsv", SST2_HEADER, _sst2_rows(6, offset=100))
    _write(tmp_path / "SST-2" / "test.tsv", "index\tsentence", ["0\tunlabelled"])  # GLUE's: never read
    data = _glue(tmp_path, tokenizer_dir)
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert sizes == {"train": 16, "val": 4, "test": 6}
    assert data.num_classes == 2 and data.input_shape == (len(TOKEN_ROWS), 16)
    # val: two examples of each label (stratified), and the same examples for another training seed
    val_x, val_y = data.splits["val"].tensors
    assert sorted(val_y.tolist()) == [0, 0, 1, 1]
    again = _glue(tmp_path, tokenizer_dir, batch_size=4)
    assert torch.equal(again.splits["val"].tensors[0], val_x)
    # test = dev.tsv, in file order, tokenized with the folder's tokenizer
    tokenizer = local_tokenizer(tokenizer_dir)
    dev_texts = [row.split("\t")[0] for row in _sst2_rows(6, offset=100)]
    expected = encode(tokenizer, dev_texts, None, 16)
    test_x, test_y = data.splits["test"].tensors
    assert torch.equal(test_x, expected) and test_y.tolist() == [0, 1, 0, 1, 0, 1]
    assert test_x.dtype == torch.long and set(test_x[:, 2].unique().tolist()) == {0}  # one segment
    assert data.network_arguments() == {"vocab_size": len(tokenizer), "pad_token_id": 0}
    assert len(data.data_fingerprint()) == 64


def test_rte_pairs_map_entailment_labels_and_mark_the_second_segment(tmp_path, tokenizer_dir):
    _write(tmp_path / "RTE" / "train.tsv", RTE_HEADER, _rte_rows(12))
    _write(tmp_path / "RTE" / "dev.tsv", RTE_HEADER, _rte_rows(4))
    data = _glue(tmp_path, tokenizer_dir, task="rte")
    x, y = data.splits["test"].tensors
    assert y.tolist() == [0, 1, 0, 1]  # entailment 0, not_entailment 1
    tokens = local_tokenizer(tokenizer_dir).convert_ids_to_tokens(x[0, 0][x[0, 1] == 1].tolist())
    assert tokens == ["[CLS]", "the", "plot", "is", "0", "[SEP]", "it", "was", "0", "[SEP]"]
    assert x[0, 2][x[0, 1] == 1].tolist() == [0] * 6 + [1] * 4


def test_columns_are_found_by_their_header_names_despite_a_byte_order_mark_or_line_ends(tmp_path):
    rows = ["1\t702876\t702977\tHe said it was fine .\tIt was fine , he said .", "0\t1\t2\tA cat .\tA dog ."]
    path = tmp_path / "train.tsv"
    path.write_text("\ufeff" + "\n".join([MRPC_HEADER, *rows]) + "\n", encoding="utf-8")
    split = read_glue_file(path, task_named("mrpc"))
    assert split.labels == [1, 0]
    assert split.texts == [["He said it was fine .", "A cat ."], ["It was fine , he said .", "A dog ."]]
    # Windows line ends, and a Unicode line separator inside a text (rows end at newlines only)
    path.write_text("\r\n".join([SST2_HEADER, "it was\u2028fine\t1", "dull\t0"]), encoding="utf-8")
    assert read_glue_file(path, task_named("sst2")).texts == [["it was\u2028fine", "dull"]]


def test_the_task_table_holds_glue_headers_as_distributed():
    headers = {task: "\t".join(spec.header) for task, spec in GLUE_TASKS.items()}
    assert (headers["sst2"], headers["rte"], headers["mrpc"]) == (SST2_HEADER, RTE_HEADER, MRPC_HEADER)


@pytest.mark.parametrize("task", sorted(GLUE_TASKS))
def test_written_glue_files_have_the_real_header_and_read_back(tmp_path, task):
    tokenizer = write_glue(tmp_path, task, train_rows=6, dev_rows=2)
    spec = GLUE_TASKS[task]
    train = tmp_path / spec.folder / "train.tsv"
    assert train.read_text().splitlines()[0] == "\t".join(spec.header)
    split = read_glue_file(train, spec)
    assert split.labels == [0, 1] * 3 and len(split.texts) == len(spec.text_columns)
    assert local_tokenizer(tokenizer).convert_ids_to_tokens([4]) != ["[UNK]"]


@pytest.mark.parametrize(
    "rows, message",
    [
        (["fine film\t1", "a\tb\t1"], r"train.tsv:3: 3 tab-separated fields where the header has 2$"),
        (
            ["fine film\t1", "dull film\tpositive"],
            r"train.tsv:3: label 'positive' in column 'label' is not one of 0, 1$",
        ),
        (["fine film\t1", "  \t0"], r"train.tsv:3: empty text in column 'sentence'$"),
        ([], r"train.tsv:2: no rows after the header$"),
    ],
)
def test_a_malformed_row_is_refused_in_one_line_naming_file_and_line(tmp_path, rows, message):
    path = _write(tmp_path / "SST-2" / "train.tsv", SST2_HEADER, rows)
    with pytest.raises(ConfigError, match=message) as error:
        read_glue_file(path, task_named("sst2"))
    assert str(error.value).startswith(f"data.data_dir: {path}:") and "\n" not in str(error.value)


def test_a_file_of_another_task_or_a_missing_file_is_refused(tmp_path, tokenizer_dir):
    path = _write(tmp_path / "RTE" / "train.tsv", SST2_HEADER, _sst2_rows(4))
    with pytest.raises(ConfigError, match=r"train.tsv:1: the header has no column 'sentence1', 'sentence2'"):
        read_glue_file(path, task_named("rte"))
    with pytest.raises(ConfigError, match=r"data.data_dir: .*SST-2/train.tsv not found"):
        _glue(tmp_path, tokenizer_dir)
    with pytest.raises(ConfigError, match="data.task must be one of sst2, mrpc, rte, qnli, wnli"):
        GlueDataModule(tokenizer=str(tokenizer_dir), task="cola")


def test_a_missing_tokenizer_folder_is_refused_in_one_line(tmp_path):
    _write(tmp_path / "SST-2" / "train.tsv", SST2_HEADER, _sst2_rows(8))
    _write(tmp_path / "SST-2" / "dev.tsv", SST2_HEADER, _sst2_rows(2))
    with pytest.raises(ConfigError, match=r"^data.tokenizer: no tokenizer folder at .*nowhere"):
        _glue(tmp_path, tmp_path / "nowhere")


def test_the_word_level_tokenizer_is_built_locally_and_round_trips_through_a_folder(tmp_path):
    tokenizer = word_level_tokenizer(["the film was good", "the film was not good", "The plot"])
    vocabulary = tokenizer.get_vocab()
    assert [vocabulary[token] for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")] == [0, 1, 2, 3]
    assert set(vocabulary) == {
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "the",
        "film",
        "was",
        "good",
        "not",
        "plot",
    }
    assert vocabulary["the"] == 4  # the most frequent word first
    rows = encode(tokenizer, ["the film was great"], None, 8)
    assert tokenizer.convert_ids_to_tokens(rows[0, 0].tolist()) == [
        "[CLS]", "the", "film", "was", "[UNK]", "[SEP]", "[PAD]", "[PAD]",
    ]  # fmt: skip
    assert rows[0, 1].tolist() == [1] * 6 + [0] * 2
    tokenizer.save_pretrained(tmp_path)
    assert torch.equal(encode(local_tokenizer(tmp_path), ["the film was great"], None, 8), rows)


def _reference_score(sentence: str) -> int:
    """The score of a synthetic sentence re-derived from its words: each cue counts ±1, ×2 right after an
    intensifier, sign flipped when a negation precedes it (directly or before its intensifier)."""
    words = sentence.split()
    score = 0
    for i, word in enumerate(words):
        if word in POSITIVE or word in NEGATIVE:
            sign = 1 if word in POSITIVE else -1
            before = i - 1
            weight = 1
            if before >= 0 and words[before] in INTENSIFIERS:
                weight, before = 2, before - 1
            if before >= 0 and words[before] in NEGATIONS:
                sign = -sign
            score += sign * weight
    return score


def test_synthetic_labels_are_the_binned_cue_scores_without_noise():
    task = TextTask(score_noise=0.0)
    splits = generate_splits(task, {"train": 300, "val": 50, "test": 50}, data_seed=3)
    texts, labels = splits["train"]
    scores = np.array([_reference_score(text) for text in texts])
    assert np.array_equal(labels, np.searchsorted([-1.5, 0.0, 1.5], scores))
    assert set(labels.tolist()) == {0, 1, 2, 3}
    assert any(word in NEGATIONS for text in texts for word in text.split())
    lengths = [len(text.split()) for text in texts]
    assert min(lengths) >= task.min_words and max(lengths) <= task.longest_sentence


def test_synthetic_task_is_reproducible_by_seed_with_disjoint_splits():
    sizes = {"train_size": 400, "val_size": 100, "test_size": 100}
    first = SyntheticTextDataModule(**sizes, data_seed=1)
    first.setup()
    same = SyntheticTextDataModule(**sizes, data_seed=1, seed=5)  # seed: batch order only
    same.setup()
    other = SyntheticTextDataModule(**sizes, data_seed=2)
    other.setup()
    assert first.data_fingerprint() == same.data_fingerprint() != other.data_fingerprint()
    assert first.texts == same.texts
    train, val, test = (set(first.texts[split]) for split in ("train", "val", "test"))
    assert len(train) == 400 and len(val) == 100 and len(test) == 100
    assert not (train & val or train & test or val & test)
    assert first.num_classes == 4 and first.input_shape == (3, 16)
    # the score noise moves some labels off the noiseless bins, most often to a neighbouring class
    texts, noisy = first.texts["train"], first.splits["train"].tensors[1].numpy()
    exact = np.searchsorted([-1.5, 0.0, 1.5], [_reference_score(text) for text in texts])
    assert 0 < np.mean(noisy != exact) < 0.5 and np.mean(np.abs(noisy - exact) > 1) < 0.01
    # the tokenizer was trained on the training sentences: every cue word has its own id
    vocabulary = first.tokenizer.get_vocab()
    assert set(POSITIVE + NEGATIVE + NEGATIONS + INTENSIFIERS) <= set(vocabulary)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_length": 10}, "data.max_length=10 would cut sentences of up to 12 words"),
        ({"class_edges": [0.0, -1.0]}, "data.class_edges must be a non-empty increasing list"),
        ({"train_size": 0}, "data.train_size must be an integer >= 1"),
        ({"max_words": 2}, "data.max_words must be an integer >= data.min_words"),
        ({"negation_rate": 1.5}, "data.negation_rate must be in [0, 1]"),
    ],
)
def test_bad_synthetic_settings_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SyntheticTextDataModule(**overrides)


def test_a_task_too_small_for_distinct_sentences_is_refused():
    task = TextTask(min_words=1, max_words=1, max_cues=1, negation_rate=0.0, intensifier_rate=0.0)
    with pytest.raises(ConfigError, match="only 20 distinct sentences found for 60 examples"):
        generate_splits(task, {"train": 40, "val": 10, "test": 10}, data_seed=0)
