"""Text data for language-model distillation: tokenizer, synthetic tasks, file readers and batches."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from divergence_lab.config.checks import CONF_DIR
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.text.batches import IGNORE_INDEX
from divergence_lab.data.text.lm_datamodule import JsonlLMDataModule, SavedLMDataModule, SyntheticLMDataModule
from divergence_lab.data.text.protocol import LanguageModelData
from divergence_lab.data.text.synthetic_tasks import (
    TASK_ALPHABET,
    arithmetic_examples,
    multi_answer_examples,
    split_examples,
)
from divergence_lab.data.text.tokenizer import build_char_tokenizer, decode_completion, load_tokenizer
from divergence_lab.ground.errors import ConfigError
from tests.conftest import compose_config

SMALL = {"train_prompts": 40, "val_prompts": 10, "test_prompts": 10, "digits": 2}


def one_line_refusal(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and message
    return message


# --- tokenizer -------------------------------------------------------------------------------------------


def test_char_tokenizer_round_trips_and_puts_bos_first() -> None:
    tokenizer = build_char_tokenizer(TASK_ALPHABET)
    text = "012+345=7530"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and len(ids) == len(text) + 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.convert_ids_to_tokens(ids[1:]) == list(text)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert [
        tokenizer.pad_token_id,
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.unk_token_id,
    ] == [
        0,
        1,
        2,
        3,
    ]
    assert len(tokenizer) == 4 + len(TASK_ALPHABET)
    assert tokenizer("x", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


def test_char_tokenizer_pads_prompts_on_the_left_for_generation() -> None:
    tokenizer = build_char_tokenizer("0123+=")
    batch = tokenizer(["1+1=", "12+13="], padding=True)
    assert batch["input_ids"][0][:2] == [tokenizer.pad_token_id] * 2
    assert batch["attention_mask"] == [[0, 0, 1, 1, 1, 1, 1], [1] * 7]


def test_char_tokenizer_saves_and_loads_from_disk(tmp_path: Path) -> None:
    tokenizer = build_char_tokenizer("ab c\n")
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True)
    text = "ab c\nba"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"], skip_special_tokens=True) == text
    assert loaded.padding_side == "left" and loaded.eos_token_id == tokenizer.eos_token_id
    assert load_tokenizer(tmp_path / "tok")(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_load_tokenizer_refuses_a_missing_or_empty_folder_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no tokenizer folder at") as error:
        load_tokenizer(tmp_path / "absent")
    one_line_refusal(error)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no readable tokenizer") as error:
        load_tokenizer(tmp_path / "empty")
    one_line_refusal(error)


def test_decode_completion_stops_at_the_first_eos() -> None:
    tokenizer = build_char_tokenizer("0123456789")
    ids = tokenizer("42", add_special_tokens=False)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert decode_completion(tokenizer, [*ids, eos, *ids, pad]) == "42"
    assert decode_completion(tokenizer, ids) == "42"


# --- synthetic tasks --------------------------------------------------------------------------------------


def evaluate_arithmetic(prompt: str, digits: int, fixed_width: bool, reverse_answer: bool) -> str:
    """The answer computed independently: evaluate the expression, then write it as the task does."""
    left, operation, right = prompt[:-1].partition("+") if "+" in prompt else prompt[:-1].partition("-")
    assert prompt.endswith("=") and left.isdigit() and right.isdigit()
    if fixed_width:
        assert len(left) == len(right) == digits
    value = int(left) + int(right) if operation == "+" else int(left) - int(right)
    assert value >= 0
    text = f"{value:0{digits + 1}d}" if fixed_width else str(value)
    return text[::-1] if reverse_answer else text


@pytest.mark.parametrize("fixed_width, reverse_answer", [(True, True), (False, False), (True, False)])
def test_every_arithmetic_answer_is_correct(fixed_width: bool, reverse_answer: bool) -> None:
    examples = arithmetic_examples(300, 3, ["+", "-"], fixed_width, reverse_answer, seed=5)
    assert {"+", "-"} <= {character for example in examples for character in example.prompt}
    for example in examples:
        assert example.answers == {evaluate_arithmetic(example.prompt, 3, fixed_width, reverse_answer)}


def test_a_reversed_fixed_width_sum_reads_least_significant_digit_first() -> None:
    every_prompt = {e.prompt: e.answers for e in arithmetic_examples(100, 1, ["+"], True, True, seed=0)}
    assert (
        every_prompt["7+8="] == {"51"} and every_prompt["3+4="] == {"70"} and every_prompt["0+0="] == {"00"}
    )


def test_the_multi_answer_set_is_exactly_the_numbers_between_the_bounds() -> None:
    examples = multi_answer_examples(300, 2, 2, 6, True, seed=1)
    for example in examples:
        low, high = example.prompt.removesuffix(":").split("<?<")
        # every 2-digit string, checked against the bounds: the answer set is exact, not only correct
        expected = {f"{n:02d}" for n in range(100) if int(low) < n < int(high)}
        assert example.answers == expected and 2 <= len(expected) <= 6
    assert {len(example.answers) for example in examples} == set(range(2, 7))


@pytest.mark.parametrize("draw", ["arithmetic", "multi_answer"])
def test_tasks_are_reproducible_by_seed_and_splits_are_disjoint(draw: str) -> None:
    def examples(seed: int):
        if draw == "arithmetic":
            return arithmetic_examples(60, 2, ["+"], True, True, seed)
        return multi_answer_examples(60, 2, 2, 5, True, seed)

    assert examples(0) == examples(0) and examples(0) != examples(1)
    splits = split_examples(examples(0), (40, 10, 10))
    prompts = [{example.prompt for example in split} for split in splits.values()]
    assert [len(p) for p in prompts] == [40, 10, 10]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])


def test_asking_for_more_prompts_than_exist_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="has 100 distinct prompts") as error:
        arithmetic_examples(101, 1, ["+"], True, True, seed=0)
    one_line_refusal(error)
    with pytest.raises(ConfigError, match="multi_answer task has") as error:
        SyntheticLMDataModule(task="multi_answer", train_prompts=500, digits=2).setup()
    one_line_refusal(error)


# --- the synthetic data module ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["arithmetic", "multi_answer", "mixed"])
def test_labels_mask_prompt_and_padding(task: str) -> None:
    digits = 1 if task == "arithmetic" else 2  # with fixed_width off, numbers of one and two digits
    dm = SyntheticLMDataModule(task=task, **{**SMALL, "digits": digits}, fixed_width=False)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    examples = {tuple(ids): prompt_length for ids, prompt_length in dm.encoded["train"]}
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    lengths = batch["attention_mask"].sum(1)
    assert len(set(lengths.tolist())) > 1  # variable lengths: some rows are padded
    for ids, mask, labels, length in zip(
        batch["input_ids"], batch["attention_mask"], batch["labels"], lengths, strict=True
    ):
        assert mask.tolist() == [1] * length + [0] * (len(mask) - length)  # right padding
        assert (ids[length:] == dm.pad_token_id).all()
        prompt_length = examples[tuple(ids[:length].tolist())]
        supervised = labels != IGNORE_INDEX
        assert supervised.tolist() == [prompt_length <= t < length for t in range(len(ids))]
        assert labels[supervised].tolist() == ids[prompt_length:length].tolist()
        assert labels[length - 1] == dm.eos_token_id  # the loss covers the eos
        completion = dm.tokenizer.decode(labels[supervised].tolist(), skip_special_tokens=True)
        prompt = dm.tokenizer.decode(ids[:prompt_length].tolist(), skip_special_tokens=True)
        assert completion in {row.completion for row in dm.rows["train"] if row.prompt == prompt}


def test_eval_prompts_carry_every_answer_and_val_batches_are_teacher_forced() -> None:
    dm = SyntheticLMDataModule(task="mixed", **SMALL)
    dm.setup()
    prompts = dm.eval_prompts("val")
    assert len(prompts) == SMALL["val_prompts"] and len({p.prompt for p in prompts}) == len(prompts)
    assert {len(p.answers) for p in prompts} - {1} and 1 in {len(p.answers) for p in prompts}
    for prompt in prompts:
        assert prompt.prompt_ids == dm.tokenizer(prompt.prompt)["input_ids"]
    rows = sum(len(p.answers) for p in prompts)  # one teacher-forced row per correct answer
    assert sum(len(batch["input_ids"]) for batch in dm.val_dataloader()) == rows
    assert dm.max_new_tokens == SMALL["digits"] + 2  # the fixed-width sum and its eos
    train_prompts = {row.prompt for row in dm.rows["train"]}
    assert not train_prompts & {p.prompt for p in prompts} and not train_prompts & {
        p.prompt for p in dm.eval_prompts("test")
    }
    with pytest.raises(ValueError, match="split must be one of"):
        dm.eval_prompts("validation")


def test_generation_batches_are_left_padded() -> None:
    dm = SyntheticLMDataModule(task="mixed", **SMALL)
    dm.setup()
    prompts = dm.eval_prompts("test")
    batch = dm.generation_batch(prompts)
    width = max(len(p.prompt_ids) for p in prompts)
    assert batch["input_ids"].shape == (len(prompts), width)
    for prompt, ids, mask in zip(prompts, batch["input_ids"], batch["attention_mask"], strict=True):
        pad = width - len(prompt.prompt_ids)
        assert mask.tolist() == [0] * pad + [1] * len(prompt.prompt_ids)
        assert ids[pad:].tolist() == prompt.prompt_ids and (ids[:pad] == dm.pad_token_id).all()


def test_training_answers_are_drawn_uniformly_from_the_correct_ones() -> None:
    dm = SyntheticLMDataModule(
        task="multi_answer", train_prompts=3, val_prompts=1, test_prompts=1, completions_per_prompt=4000
    )
    dm.setup()
    for prompt in {row.prompt for row in dm.rows["train"]}:
        rows = [row for row in dm.rows["train"] if row.prompt == prompt]
        counts = Counter(row.completion for row in rows)
        assert set(counts) == rows[0].answers  # every answer is drawn, and only correct ones
        expected = len(rows) / len(rows[0].answers)
        assert all(abs(count - expected) < 5 * expected**0.5 for count in counts.values())


def test_the_training_order_is_a_function_of_seed_and_epoch() -> None:
    def order(seed: int, epoch: int) -> list[int]:
        dm = SyntheticLMDataModule(**SMALL, seed=seed)
        dm.setup()
        sampler = dm.train_dataloader().sampler
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 0) == order(0, 0) and order(0, 1) != order(0, 0) and order(1, 0) != order(0, 0)


def test_the_fingerprint_follows_the_data_not_the_batch_order() -> None:
    def digest(**overrides) -> str:
        dm = SyntheticLMDataModule(**{**SMALL, **overrides})
        dm.setup()
        return dm.data_fingerprint()

    reference = digest()
    assert len(reference) == 64 and digest(seed=9) == reference
    assert digest(data_seed=1) != reference and digest(task="mixed") != reference


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"max_length": 5}, r"data.max_length=5 is shorter than train\[0\]"),
        ({"task": "poetry"}, "data.task must be one of arithmetic, multi_answer, mixed"),
        ({"val_prompts": 0}, "data.val_prompts must be an integer >= 1"),
        ({"operations": ["*"]}, "data.operations must be a non-empty list"),
        ({"task": "multi_answer", "min_answers": 1}, "2 <= min_answers <= max_answers"),
    ],
)
def test_bad_synthetic_settings_are_refused_in_one_line(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        SyntheticLMDataModule(**{**SMALL, **overrides}).setup()
    one_line_refusal(error)


# --- JSON lines -------------------------------------------------------------------------------------------


def write_jsonl(folder: Path, splits: dict[str, list[dict]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in splits.items():
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
        )
    return folder


RECORDS = {
    "train": [
        {"prompt": "Q: 2+2?\n", "completion": "4"},
        {"prompt": "Q: capital?\n", "completion": " Paris\n"},
    ],
    "validation": [
        {"prompt": "Q: odd digit?\n", "completion": "3", "answers": ["1", "3", "5", "7", "9"]},
        {"prompt": "Q: odd digit?\n", "completion": "5", "answers": ["1", "3", "5", "7", "9"]},
        {"prompt": "Q: 1+1?\n", "completion": "2", "id": 17},
    ],
    "test": [{"prompt": "Q: 3+3?\n", "completion": "6"}],
}


def test_jsonl_files_in_the_real_format_are_served(tmp_path: Path) -> None:
    folder = write_jsonl(tmp_path / "texts", RECORDS)
    dm = instantiate_datamodule(compose_config(["data=lm_jsonl", f"data.path={folder}"]).data, seed=0)
    assert isinstance(dm, JsonlLMDataModule) and isinstance(dm, LanguageModelData)
    assert dm.tokenizer.decode(dm.tokenizer("Paris?")["input_ids"], skip_special_tokens=True) == "Paris?"
    prompts = dm.eval_prompts("val")
    assert [p.prompt for p in prompts] == ["Q: odd digit?\n", "Q: 1+1?\n"]  # distinct, in file order
    assert prompts[0].answers == {"1", "3", "5", "7", "9"} and prompts[1].answers == {"2"}
    assert dm.eval_prompts("train")[1].answers == {"Paris"}  # the completion's first line, stripped
    assert sum(len(b["input_ids"]) for b in dm.val_dataloader()) == 3  # every line is a teacher-forced row
    batch = next(iter(dm.train_dataloader()))
    supervised = [dm.tokenizer.decode(row[row != IGNORE_INDEX].tolist()) for row in batch["labels"]]
    assert sorted(supervised) == sorted(["4<eos>", " Paris\n<eos>"])
    digest = dm.data_fingerprint()
    again = JsonlLMDataModule(path=str(folder))
    again.setup()
    assert again.data_fingerprint() == digest
    write_jsonl(folder, {"test": [{"prompt": "Q: 3+3?\n", "completion": "six"}]})
    changed = JsonlLMDataModule(path=str(folder))
    changed.setup()
    assert changed.data_fingerprint() != digest


def test_a_mapping_of_files_is_read_as_the_three_splits(tmp_path: Path) -> None:
    folder = write_jsonl(tmp_path, RECORDS)
    dm = JsonlLMDataModule(
        path={name: str(folder / f"{name}.jsonl") for name in ("train", "validation", "test")}
    )
    dm.setup()
    assert [p.prompt for p in dm.eval_prompts("test")] == ["Q: 3+3?\n"]


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        ('{"prompt": "a", "completion": ', "not valid JSON"),
        ('{"prompt": "a"}', "'completion' must be a string"),
        ('["a", "b"]', "expected an object with prompt and completion"),
        (
            '{"prompt": "a", "completion": "b", "answers": "b"}',
            "'answers' must be a non-empty list of strings",
        ),
        ('{"prompt": "a", "completion": "b", "answers": ["b\\nc"]}', "an answer holds a newline"),
    ],
)
def test_a_malformed_line_is_refused_naming_file_and_line(tmp_path: Path, bad_line: str, reason: str) -> None:
    folder = write_jsonl(tmp_path / "texts", RECORDS)
    validation = folder / "validation.jsonl"
    lines = validation.read_text().splitlines()
    validation.write_text("\n".join([lines[0], "", bad_line, *lines[1:]]) + "\n")  # line 3; line 2 blank
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    dm = JsonlLMDataModule(path=str(folder))
    with pytest.raises(ConfigError, match=reason) as error:
        dm.setup()
    assert one_line_refusal(error).startswith(f"data.path: {validation}:3: ")
    assert dm.rows == {} and {path.name: path.read_bytes() for path in folder.iterdir()} == before
    validation.write_text("\n".join(lines) + "\n")  # once the line is fixed the same module sets up
    dm.setup()
    assert len(dm.rows["val"]) == 3


def test_missing_jsonl_files_and_empty_files_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.path: set the folder") as error:
        JsonlLMDataModule().setup()
    one_line_refusal(error)
    folder = write_jsonl(tmp_path, {"train": RECORDS["train"], "test": RECORDS["test"]})
    with pytest.raises(ConfigError, match="missing .*validation.jsonl") as error:
        JsonlLMDataModule(path=str(folder)).setup()
    one_line_refusal(error)
    write_jsonl(folder, {"validation": []})
    with pytest.raises(ConfigError, match="validation.jsonl holds no examples"):
        JsonlLMDataModule(path=str(folder)).setup()


def test_a_user_tokenizer_folder_is_used(tmp_path: Path) -> None:
    folder = write_jsonl(tmp_path / "texts", RECORDS)
    build_char_tokenizer("Q: 0123456789+?\nParisodgt").save_pretrained(tmp_path / "tok")
    dm = JsonlLMDataModule(path=str(folder), tokenizer=str(tmp_path / "tok"))
    dm.setup()
    assert dm.vocab_size == len(AutoTokenizer.from_pretrained(tmp_path / "tok", local_files_only=True))
    assert dm.tokenizer.padding_side == "left"


# --- datasets saved to disk -------------------------------------------------------------------------------


def test_a_dataset_saved_to_disk_is_served(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")

    def split(records: list[dict]):
        return datasets.Dataset.from_dict(
            {"prompt": [r["prompt"] for r in records], "completion": [r["completion"] for r in records]}
        )

    saved = datasets.DatasetDict({name: split(records) for name, records in RECORDS.items()})
    saved.save_to_disk(str(tmp_path / "saved"))
    dm = instantiate_datamodule(
        compose_config(["data=lm_saved", f"data.path={tmp_path / 'saved'}"]).data, seed=0
    )
    assert isinstance(dm, SavedLMDataModule) and isinstance(dm, LanguageModelData)
    assert [p.prompt for p in dm.eval_prompts("val")] == ["Q: odd digit?\n", "Q: 1+1?\n"]
    assert dm.eval_prompts("val")[0].answers == {"3", "5"}  # no answers column: the completions
    assert len(dm.data_fingerprint()) == 64
    datasets.DatasetDict({"train": split(RECORDS["train"])}).save_to_disk(str(tmp_path / "partial"))
    with pytest.raises(ConfigError, match="lacks the split") as error:
        SavedLMDataModule(path=str(tmp_path / "partial")).setup()
    one_line_refusal(error)


def test_a_saved_dataset_without_the_datasets_package_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now raises ImportError
    with pytest.raises(
        ConfigError, match="install datasets to read a dataset saved with save_to_disk"
    ) as error:
        SavedLMDataModule(path=str(tmp_path)).setup()
    one_line_refusal(error)


# --- the shipped configs ----------------------------------------------------------------------------------


def test_every_language_model_data_config_is_checked_here() -> None:
    shipped = {path.stem for path in (CONF_DIR / "data").glob("lm_*.yaml")}
    assert shipped == {"lm_synthetic", "lm_jsonl", "lm_saved"}  # each built by a test of this file


def test_the_synthetic_config_builds_a_language_model_data_module() -> None:
    cfg = compose_config(
        ["data=lm_synthetic", "data.train_prompts=20", "data.val_prompts=5", "data.test_prompts=5"]
    )
    assert cfg.data.name == "lm_synthetic"
    dm = instantiate_datamodule(cfg.data, seed=4)
    assert isinstance(dm, LanguageModelData) and dm.seed == 4
    assert dm.vocab_size == 4 + len(TASK_ALPHABET)
    assert compose_config(["data=lm_saved"]).data.name == "lm_hf_disk"
    assert torch.is_tensor(next(iter(dm.test_dataloader()))["labels"])
