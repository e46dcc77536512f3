"""``make gpu-check`` (scripts/gpu_check.py) on a machine without a GPU: one line, exit 0, nothing written;
and its parts that need no GPU: the table, the tiny data, the smoke variants and the command lines that run
them, the run records, and the timed rlvr step run on the CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from divergence_lab.config.checks import validate_settings
from divergence_lab.data import instantiate_datamodule
from divergence_lab.data.cifar import LAYOUT, CIFARDataModule, read_cifar, write_cifar
from divergence_lab.run.pipeline import trainer_arguments
from tests.conftest import compose_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
KNOWN_GPU_PRESETS = {
    "bdkd_cifar100",
    "cts_resnet20_cifar10",
    "legogcd_cifar100",
    "lm_kd_local",
    "pld_cifar100",
    "rlvr_local",
    "sinkd_cifar100",
    "sinkd_glue",
}
# settings a smoke variant cuts beside its stage lengths (and its study_name), by preset
ALSO_CUT = {
    name: {"method.evaluation.val_prompts", "method.evaluation.test_prompts"}
    for name in ("lm_kd_local", "rlvr_local")
}
# the GLUE preset's BERT folders, small here (the check writes BERT-base-sized ones)
SMALL_BERTS = {
    key: {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": layers}
    for key, layers in (("method.teacher.model.path", 2), ("model.path", 1))
}


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gpu_check = _load_script()


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@NO_GPU
def test_without_a_gpu_it_prints_one_line_and_writes_nothing(tmp_path):
    cwd, scratch = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0
    assert done.stderr == ""
    (line,) = done.stdout.splitlines()
    assert line.startswith("gpu-check: no usable CUDA GPU") and line.endswith("nothing run")
    assert _files(cwd) == [] and _files(scratch) == []


@NO_GPU
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_target_prints_the_same_line():
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv: make would install one")
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "gpu-check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("gpu-check: no usable CUDA GPU")


def test_table_aligns_columns_and_shows_missing_values_as_dashes():
    Row = gpu_check.Row
    rows = [
        Row("pld_cifar100", "bf16-mixed", 41.234, 1234.4),
        Row("kl fused cuda fp32 256x32768", "32-true", max_abs_diff=6.6e-06),
        Row("cts_resnet20_cifar10", status="exit 1: RuntimeError: indices should be on the same device"),
        Row("rlvr_step", "bf16-mixed", 4.0, 812.6, step_ms=250.04),
    ]
    header, *lines = gpu_check.format_table(rows).splitlines()
    assert header.split() == [
        "check", "precision", "steps/s", "ms/step", "peak", "MiB", "max", "|diff|", "status"
    ]  # fmt: skip
    assert lines[0].split() == ["pld_cifar100", "bf16-mixed", "41.2", "-", "1234", "-", "ok"]
    assert lines[1].split()[:5] == ["kl", "fused", "cuda", "fp32", "256x32768"]
    assert lines[1].split()[5:] == ["32-true", "-", "-", "-", "6.6e-06", "ok"]
    assert lines[2].split()[1:6] == ["-", "-", "-", "-", "-"]
    assert lines[3].split() == ["rlvr_step", "bf16-mixed", "4.0", "250.0", "813", "-", "ok"]
    # every column starts at the same place on every line
    status_at = header.index("status")
    assert all(line[status_at - 2 : status_at] == "  " for line in lines)
    assert [line[status_at:].split()[0] for line in lines] == ["ok", "ok", "exit", "ok"]
    assert [row.failed for row in rows] == [False, False, True, False]


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_writer_makes_files_the_real_reader_loads(tmp_path, variant):
    classes = LAYOUT[variant].classes
    written = write_cifar(tmp_path, variant, per_class=7, test_per_class=2)
    assert (tmp_path / LAYOUT[variant].folder).is_dir()
    splits = read_cifar(tmp_path, variant)
    images, labels = splits["train"]
    assert images.shape == (7 * classes, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images.reshape(len(images), -1), torch.from_numpy(written))
    assert torch.bincount(labels, minlength=classes).tolist() == [7] * classes
    test_images, test_labels = splits["test"]
    assert test_images.shape == (2 * classes, 3, 32, 32)
    assert torch.bincount(test_labels, minlength=classes).tolist() == [2] * classes


@pytest.mark.parametrize(
    ("variant", "batch_size", "held_out"), [("cifar10", 512, 0.0), ("cifar100", 128, 0.1)]
)
def test_written_data_gives_the_steps_a_preset_asks_for(tmp_path, variant, batch_size, held_out):
    steps = 5
    per_class = gpu_check.images_per_class(batch_size, steps, LAYOUT[variant].classes, held_out)
    write_cifar(tmp_path, variant, per_class, test_per_class=gpu_check.TEST_PER_CLASS)
    data = CIFARDataModule(str(tmp_path), variant, val_fraction=held_out, batch_size=batch_size)
    data.setup()
    assert len(data.train_dataloader()) >= steps


def test_gpu_presets_are_the_experiments_that_override_the_trainer_with_gpu():
    found = gpu_check.gpu_presets()
    assert set(found) >= KNOWN_GPU_PRESETS
    assert not any(name.endswith(gpu_check.SMOKE_SUFFIX) for name in found)
    for name in found:
        assert "override /trainer: gpu" in (gpu_check.EXPERIMENTS / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", gpu_check.gpu_presets())
def test_every_gpu_preset_has_a_smoke_variant_built_on_it(name):
    smoke = gpu_check.smoke_variant(name)
    assert smoke == f"{name}_smoke"
    text = (gpu_check.EXPERIMENTS / f"{smoke}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert f"  - /experiment/{name}\n" in text  # inherits the preset, so edits of the preset reach it
    assert f"dlab experiment={smoke}" in text  # its one-line command


def _settings(cfg) -> dict[str, object]:
    """Every leaf of ``cfg`` by dotted key, interpolations and ``???`` as written."""
    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key in node:
            child = node._get_node(key)
            if OmegaConf.is_dict(child):
                walk(child, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = (
                    OmegaConf.to_container(child) if OmegaConf.is_list(child) else child._value()
                )

    walk(cfg, "")
    return flat


@pytest.mark.parametrize("name", gpu_check.gpu_presets())
def test_the_smoke_variant_is_its_preset_with_every_stage_cut_to_one_epoch(name):
    full = compose_config([f"experiment={name}"])
    smoke = compose_config([f"experiment={gpu_check.smoke_variant(name)}"])
    full_lengths, smoke_lengths = gpu_check.stage_durations(full), gpu_check.stage_durations(smoke)
    assert "trainer.max_epochs" in smoke_lengths and set(full_lengths) <= set(smoke_lengths)
    # every stage the preset has is cut to one epoch; one it leaves out (0 epochs) stays out
    cut = {key: min(epochs, gpu_check.SMOKE_EPOCHS) for key, epochs in full_lengths.items()}
    assert {key: smoke_lengths[key] for key in full_lengths} == cut
    assert max(smoke_lengths.values()) <= gpu_check.SMOKE_EPOCHS
    # the same model, method, data and precision: nothing else differs
    before, after = _settings(full), _settings(smoke)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed <= set(smoke_lengths) | {"study_name"} | ALSO_CUT.get(name, set())
    assert (smoke.trainer.accelerator, smoke.trainer.precision) == (
        full.trainer.accelerator,
        full.trainer.precision,
    )
    assert smoke.model == full.model and smoke.method.name == full.method.name
    assert smoke.study_name == f"{full.study_name}_smoke"


def test_a_preset_that_is_not_cut_short_says_which_stages_are_long():
    full = gpu_check.Preset("pld_cifar100", compose_config(["experiment=pld_cifar100"]))
    assert full.too_long() == {"method.teacher.max_epochs": 240, "trainer.max_epochs": 250}
    assert gpu_check.describe_preset("pld_cifar100").too_long() == {}


def _composed(argv: list[str]):
    overrides = [o for o in argv if not o.startswith("hydra.")]
    cfg = compose_config(overrides)
    validate_settings(cfg, overrides)
    return cfg


@pytest.mark.parametrize("name", sorted(KNOWN_GPU_PRESETS))
def test_the_check_runs_each_preset_as_its_smoke_variant_on_tiny_files(tmp_path, monkeypatch, name):
    monkeypatch.setattr(gpu_check, "GLUE_MODELS", SMALL_BERTS)
    steps = 3
    preset = gpu_check.describe_preset(name)
    data = gpu_check.write_tiny_data(preset, tmp_path / "data", steps)
    argv = gpu_check.run_overrides(preset, data, tmp_path, name)
    assert argv[0] == f"experiment={name}_smoke"
    # beyond the smoke variant, only where the tiny files are and where the run writes
    assert all(str(tmp_path) in override for override in argv[1:])
    assert {o.split("=")[0] for o in argv[1:]} - {o.split("=")[0] for o in data} == {
        "paths.output_root",
        "paths.teacher_cache",
        "hydra.run.dir",
    }
    cfg = _composed(argv)
    precision = compose_config([f"experiment={name}"]).trainer.precision
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == precision
    resolved = "32-true" if precision == "auto" else precision  # auto, on this machine without a GPU
    assert trainer_arguments(cfg.trainer)["precision"] == resolved
    # the real reader takes the tiny files; data.tokenizer may name a model's folder (${model.path})
    datamodule = instantiate_datamodule(cfg.data, seed=0)
    assert len(datamodule.train_dataloader()) >= steps


def test_the_ddp_command_line_is_one_process_on_one_gpu(tmp_path):
    preset = gpu_check.describe_preset(gpu_check.DDP_PRESET)
    data = [f"data.data_dir={tmp_path}"]
    cfg = _composed([*gpu_check.run_overrides(preset, data, tmp_path, "ddp"), *gpu_check.DDP])
    assert cfg.trainer.strategy == "ddp"
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.num_nodes) == ("gpu", 1, 1)
    assert cfg.trainer.precision == "auto" and cfg.trainer.max_epochs == 1


def test_run_rows_report_failures_off_gpu_fits_and_forwards():
    fit = {"module": "DistillationModule", "device": "cuda:0", "precision": "bf16-mixed", "steps": 12}
    good = {"exit": 0, "fits": [{**fit, "module": "CrossEntropyModule"}, {**fit, "steps_per_s": 30.0}]}
    row = gpu_check.run_row("pld", {**good, "off_gpu": {}})
    assert (row.status, row.precision, row.steps_per_s) == ("ok", "bf16-mixed", 30.0)
    assert gpu_check.run_row("pld", None).status == "no result"
    assert gpu_check.run_row("pld", {**good, "exit": 1}).status == "exit 1"
    on_cpu = {"exit": 0, "fits": [{**fit, "device": "cpu"}]}
    assert gpu_check.run_row("pld", on_cpu).status == "fit DistillationModule on cpu"
    forwards = gpu_check.run_row("cts", {**good, "off_gpu": {"Conv2d": 40, "Linear": 2}})
    assert forwards.status == "forwards off the GPU: Conv2d x40, Linear x2"


def test_divergence_comparison_on_the_cpu_in_float32():
    cases = [
        ("kl", {"temperature": 2.0}, (40, 9), ("fused", "plain", "plain@bf16")),
        ("sinkhorn", {"iters": 10}, (16, 5), ("fused",)),
        ("sinkhorn_batch", {}, (12, 6), ("",)),
    ]
    rows = gpu_check.divergence_rows(cases, device="cpu")
    assert [row.check for row in rows] == [
        "kl fused cpu fp32 40x9",
        "kl plain cpu fp32 40x9",
        "kl plain bf16-autocast cpu fp32 40x9",  # log_softmax autocasts to float32: no bf16 anywhere
        "sinkhorn fused cpu fp32 16x5",
        "sinkhorn_batch batch cpu fp32 12x6",
    ]
    assert all(row.status == "ok" and 0 < row.max_abs_diff < 1e-4 for row in rows)
    assert [row.precision for row in rows] == ["32-true", "32-true", "bf16-mixed", "32-true", "32-true"]


def test_a_divergence_case_that_fails_is_one_row():
    (row,) = gpu_check.divergence_rows([("kl", {"no_such": 1}, (4, 3), ("fused",))], device="cpu")
    assert row.failed and row.max_abs_diff is None


@pytest.mark.slow
def test_a_run_process_records_its_fits_and_its_forwards_off_the_gpu(tmp_path):
    """The child mode on the CPU: a KD run (teacher fit, then the student's) through the dlab entry point."""
    result = tmp_path / "result.json"
    argv = [
        "trainer.max_epochs=1",
        "method.teacher.max_epochs=1",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
        f"paths.output_root={tmp_path / 'outputs'}",
        f"paths.teacher_cache={tmp_path / 'teachers'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    command = [sys.executable, str(SCRIPT), "--child", str(result), "--warmup", "1", "--", *argv]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(result.read_text())
    assert outcome["exit"] == 0
    teacher, student = outcome["fits"]
    assert (teacher["module"], student["module"]) == ("CrossEntropyModule", "DistillationModule")
    assert student["steps"] == 4 and student["steps_per_s"] > 0 and student["device"] == "cpu"
    assert student["precision"] == "32-true" and "peak_mib" not in student
    assert outcome["off_gpu"]["Linear"] > 0
    assert gpu_check.run_row("kd", outcome).status.startswith("fit CrossEntropyModule on cpu")


# --- the timed rlvr step, on the CPU ------------------------------------------------------------------------

TINY_GPT2 = (("n_layer", 1), ("n_embd", 16), ("n_head", 2))
CPU_STEP = gpu_check.StepShape(vocab=512, sizes=TINY_GPT2, prompt_tokens=5, new_tokens=4)
FUSED_ON = ("method.fused_linear=true",)  # below fused_linear_min_vocab: the path the GPU rows take


def test_the_rlvr_step_takes_the_fused_path_at_a_real_vocabulary_with_the_presets_settings():
    shape = gpu_check.StepShape(sizes=TINY_GPT2, prompt_tokens=4, new_tokens=2)  # 32 768 ids
    setup = gpu_check.rlvr_step_setup("rkl", "exact", shape, device="cpu")
    preset = compose_config([f"experiment={gpu_check.RLVR_PRESET}"])
    assert setup.module.fused and preset.method.fused_linear == "auto"  # auto chooses it at 32 768
    assert setup.module.model.get_output_embeddings().weight.shape[0] == 32768 == len(setup.module.tokenizer)
    assert setup.batch["input_ids"].shape[0] == preset.data.batch_size == 4
    assert setup.module.settings.group_size == preset.method.group_size == 8
    assert setup.optimizer.param_groups[0]["lr"] == preset.method.optimizer.lr == 1e-6
    assert (setup.precision, setup.autocast) == ("32-true", None)  # off CUDA
    assert preset.method.initial.max_epochs == 0  # the loaded model is the initial policy


def test_one_rlvr_step_on_the_cpu_is_adams_first_step_on_the_policy_only():
    setup = gpu_check.rlvr_step_setup("kl", "exact", CPU_STEP, device="cpu", overrides=FUSED_ON)
    policy, reference = setup.module.model, setup.module.reference
    assert setup.module.fused
    before = [p.detach().clone() for p in policy.parameters()]
    reference_before = [p.detach().clone() for p in reference.parameters()]
    ms, peak, loss = gpu_check.time_rlvr_steps(setup, warmup=0, timed=1)
    assert math.isfinite(ms) and ms > 0 and peak is None and math.isfinite(loss)
    # AdamW's first step (no weight decay): m̂ = g, v̂ = g², so θ moves by −lr · g / (|g| + eps), g the
    # clipped gradient the step left in .grad; float32 rounding of θ (|θ| ≲ 1) is below lr / 10
    group = setup.optimizer.param_groups[0]
    lr, eps = group["lr"], group["eps"]
    assert group["weight_decay"] == 0.0
    moved = 0
    for old, p in zip(before, policy.parameters(), strict=True):
        expected = -lr * p.grad / (p.grad.abs() + eps)
        torch.testing.assert_close(p.detach() - old, expected, rtol=0.0, atol=0.1 * lr)
        moved += int((p.detach() != old).sum())
    assert moved > 0
    assert all(torch.equal(old, p) for old, p in zip(reference_before, reference.parameters(), strict=True))


def test_rlvr_step_rows_name_the_case_and_path_and_report_failures_in_their_row():
    cases = [("js", "exact"), ("kl", "k3"), ("no_such_divergence", "exact")]
    rows = gpu_check.rlvr_step_rows(cases, CPU_STEP, device="cpu", warmup=0, timed=1, overrides=FUSED_ON)
    assert [row.check for row in rows] == [
        "rlvr step js exact cpu vocab 512 fused",
        "rlvr step kl k3 cpu vocab 512 fused",
        "rlvr step no_such_divergence exact cpu vocab 512",
    ]
    for row in rows[:2]:
        assert row.status == "ok" and row.precision == "32-true" and row.peak_mib is None
        assert math.isfinite(row.step_ms) and row.step_ms > 0
        assert row.steps_per_s == pytest.approx(1000.0 / row.step_ms)
    assert rows[2].failed and rows[2].step_ms is None and "no_such_divergence" in rows[2].status
