"""Check the GPU presets on this machine's CUDA GPU in a few minutes (``make gpu-check``).

Without a usable CUDA GPU it prints one line and exits 0, having run and written nothing. With one, in a
temporary folder removed at the end (``--keep`` keeps it, with every run's log):

1. every GPU preset (``conf/experiment/*.yaml`` with ``override /trainer: gpu``) through its smoke variant
   (``experiment=<preset>_smoke``: the preset itself, every stage and the main fit cut to one epoch), each in
   its own process through the real ``dlab`` entry point, on tiny files in the real format that hold about
   ``--steps`` batches of the preset's batch size (CIFAR pickles; GLUE TSV files with random BERT-base and
   6-layer BERT folders; JSON-lines prompts with small GPT-2 folders): the main fit's steps/s (after
   ``--warmup`` steps), its peak GPU memory (``torch.cuda.max_memory_allocated``), the precision it
   resolved, and whether every fit and every network forward outside the timed steps ran on the GPU. The
   command line adds to the smoke variant only where the tiny files are, so the two cannot drift apart;
   a smoke variant that keeps a stage longer than one epoch is not run;
2. the fused pointwise path and the Sinkhorn members in float32 on CUDA, some also inside bf16 autocast (as
   a bf16-mixed training step calls them), against the plain path in float64 on the CPU: the largest
   absolute difference of the values and of the gradients of both inputs;
3. one ``rlvr`` training step at a 32 768-token vocabulary with ``experiment=rlvr_local``'s settings, for the
   exact regulariser with ``divergence=kl``, ``rkl`` and ``js`` and for the sampled ``k3`` estimator: a tiny
   GPT-2 policy and reference built from their config, ``data.batch_size`` prompts x ``method.group_size``
   sampled completions, the reference's forward, the regulariser (on the fused linear path, which
   ``fused_linear: auto`` must choose at this vocabulary), the backward and the optimiser step in the
   precision the preset resolves: the time of one step (ms, the mean of a few after a warm-up step) and the
   peak GPU memory (``torch.cuda.max_memory_allocated``);
4. one DDP step on one GPU (``trainer=ddp trainer.accelerator=gpu trainer.devices=1``).

It prints one table (check, precision, steps/s, ms/step, peak memory, max abs difference, status) and exits 1
when any check failed. The whole check is kept under ``--budget`` seconds (default 480): a run that would go
past it is stopped (or not started) and its row says so.

    python scripts/gpu_check.py                 # make gpu-check
    python scripts/gpu_check.py --only bdkd_cifar100 --keep /tmp/gpu-check

A smoke variant runs on real data the same way, e.g. ``dlab experiment=pld_cifar100_smoke
data.data_dir=/datasets``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "divergence_lab" / "conf" / "experiment"
GPU_TRAINER = "gpu"
STEPS, WARMUP = 12, 2  # training steps per preset; the first WARMUP are not timed (cuDNN, allocator)
BUDGET_S = 480.0  # the whole check, under the 8 minutes it promises
RUN_TIMEOUT_S = 180.0  # one preset
TOLERANCE = 1e-3  # divergence checks: max abs difference / max(1, largest reference magnitude)
TEST_PER_CLASS = 2
MIB = 2**20
SMOKE_SUFFIX = "_smoke"  # conf/experiment/<preset>_smoke.yaml: the preset, every stage cut short
SMOKE_EPOCHS = 1  # the most epochs a smoke variant's stages and main fit may keep
# the keys that set how long a stage or the main fit trains: max_epochs, rewind_epochs, search.epochs,
# ltr.epochs_per_round, pretrain.epochs ... (the last component of the key)
DURATION_KEY = re.compile(r"(^|_)epochs(_per_round)?$")
# experiment=sinkd_glue's folders: a BERT-base teacher (BertConfig's defaults) and a 6-layer BERT student
GLUE_MODELS = {"method.teacher.model.path": {}, "model.path": {"num_hidden_layers": 6}}
LM_MODELS = {"model": "lm_tiny", "method.teacher.model": "lm_teacher_small"}  # conf/model/, for *_local
LM_FROM_FOLDER = "divergence_lab.models.causal_lm.causal_lm_from_path"  # conf/model/lm_local.yaml's target
LM_OPERAND_DIGITS = 3  # the tiny JSON-lines prompts: "a+b=" with operands of this many digits
DDP = ("trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=1", "++trainer.precision=auto")
DDP_PRESET = "sinkd_cifar100"  # its teacher is in the check's teacher cache by then: the DDP run loads it

# (registry member, parameters, (rows, classes), executions compared with the plain CPU float64 reference):
# "fused" / "plain" (``execution=``), "" for a member without that parameter; "@bf16" = called inside
# torch.autocast(bfloat16), as a training step under trainer.precision=bf16-mixed calls it: a member computes
# in float32 whatever its inputs (divergences.base), so the difference must stay at the float32 level
Case = tuple[str, dict[str, Any], tuple[int, int], tuple[str, ...]]
DIVERGENCE_CASES: list[Case] = [
    ("kl", {"temperature": 4.0}, (2048, 100), ("fused", "plain", "fused@bf16", "plain@bf16")),
    ("rkl", {}, (2048, 100), ("fused",)),
    ("js", {}, (2048, 100), ("fused",)),
    ("tv", {}, (2048, 100), ("fused",)),
    ("hellinger", {}, (2048, 100), ("fused",)),
    ("alpha", {"alpha": 0.5}, (2048, 100), ("fused",)),  # no closed form: autograd block by block
    ("kl", {}, (256, 32768), ("fused", "plain")),  # vocabulary-sized rows, where the fused path matters
    ("sinkhorn", {"iters": 50}, (512, 100), ("fused", "plain", "plain@bf16")),
    ("sinkhorn_div", {"iters": 50}, (512, 100), ("fused", "plain")),
    ("sinkhorn_batch", {}, (128, 100), ("", "@bf16")),  # SinKD's term: no fused path, CUDA against the CPU
]

# one rlvr training step (experiment=rlvr_local's settings) per (divergence, regulariser estimator)
RLVR_PRESET = "rlvr_local"
RLVR_CASES: list[tuple[str, str]] = [("kl", "exact"), ("rkl", "exact"), ("js", "exact"), ("kl", "k3")]
RLVR_WARMUP, RLVR_TIMED = 1, 3  # steps per case: the first not timed (cuBLAS handles, allocator, kernels)
CHAR_BASE = 0x4E00  # the step's character tokenizer: one character per id from this code point on


@dataclass(frozen=True)
class StepShape:
    """The sizes of one timed rlvr step: the vocabulary, the GPT-2 ``sizes`` of the policy and of its
    reference, the tokens of each prompt and the new tokens of each sampled completion."""

    vocab: int = 32768
    sizes: tuple[tuple[str, int], ...] = (("n_layer", 2), ("n_embd", 256), ("n_head", 4))
    prompt_tokens: int = 32
    new_tokens: int = 64


@dataclass
class Row:
    """One line of the result table; None shows as ``-``."""

    check: str
    precision: str | None = None
    steps_per_s: float | None = None
    peak_mib: float | None = None
    max_abs_diff: float | None = None
    status: str = "ok"
    step_ms: float | None = None

    @property
    def failed(self) -> bool:
        return self.status != "ok"


COLUMNS = ("check", "precision", "steps/s", "ms/step", "peak MiB", "max |diff|", "status")


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec) if spec else str(value)


def format_table(rows: list[Row]) -> str:
    """The rows as an aligned text table with a header line."""
    cells = [list(COLUMNS)] + [
        [
            row.check,
            _cell(row.precision, ""),
            _cell(row.steps_per_s, ".1f"),
            _cell(row.step_ms, ".1f"),
            _cell(row.peak_mib, ".0f"),
            _cell(row.max_abs_diff, ".1e"),
            row.status,
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = {2, 3, 4, 5}
    lines = [
        "  ".join(
            text.rjust(w) if i in numeric else text.ljust(w)
            for i, (text, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    return "\n".join(line.rstrip() for line in lines)


# ---------------------------------------------------------------------------------------------------------
# presets, their smoke variants and their command lines
# ---------------------------------------------------------------------------------------------------------


def gpu_presets(folder: Path = EXPERIMENTS) -> list[str]:
    """The experiment presets whose defaults list has ``override /trainer: gpu``, sorted (a smoke variant
    inherits the trainer from its preset's file, so it is not one of them)."""
    import yaml

    found = []
    for path in sorted(folder.glob("*.yaml")):
        defaults = (yaml.safe_load(path.read_text()) or {}).get("defaults") or []
        if any(
            isinstance(entry, dict) and entry.get("override /trainer") == GPU_TRAINER for entry in defaults
        ):
            found.append(path.stem)
    return found


def smoke_variant(preset: str) -> str:
    """The experiment that runs ``preset`` cut short: ``conf/experiment/<preset>_smoke.yaml``."""
    return f"{preset}{SMOKE_SUFFIX}"


def compose_experiment(name: str, overrides: tuple[str, ...] = ()) -> Any:
    """The ``train`` config with ``experiment=name`` and ``overrides``, composed as ``dlab`` composes it."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module("divergence_lab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def stage_durations(cfg: Any, prefix: str = "") -> dict[str, int]:
    """Every integer setting of ``cfg`` whose key says how many epochs something trains
    (:data:`DURATION_KEY`), by its dotted key; interpolations resolved."""
    from omegaconf import DictConfig

    found: dict[str, int] = {}
    for key in cfg:
        if isinstance(cfg._get_node(key), DictConfig):
            found.update(stage_durations(cfg[key], f"{prefix}{key}."))
        elif DURATION_KEY.search(str(key)):
            value = cfg[key]
            if isinstance(value, int) and not isinstance(value, bool):
                found[f"{prefix}{key}"] = value
    return found


@dataclass
class Preset:
    """A GPU preset and the composed config of its smoke variant (``cfg``)."""

    name: str
    cfg: Any

    @property
    def smoke(self) -> str:
        return smoke_variant(self.name)

    @property
    def data_kind(self) -> str:
        """The class of the data module the config builds (its ``_target_``'s last component)."""
        return str(self.cfg.data._target_).rsplit(".", 1)[-1]

    def too_long(self) -> dict[str, int]:
        """The smoke variant's stage lengths above :data:`SMOKE_EPOCHS` (none when it is cut short)."""
        return {key: value for key, value in stage_durations(self.cfg).items() if value > SMOKE_EPOCHS}


def describe_preset(name: str) -> Preset:
    """The preset ``name`` with its smoke variant composed."""
    return Preset(name, compose_experiment(smoke_variant(name)))


def run_overrides(preset: Preset, data: list[str], work: Path, label: str) -> list[str]:
    """The ``dlab`` command line (after the program name) of one preset's smoke run in ``work``: the smoke
    variant, where its tiny files are (``data``, from :func:`write_tiny_data`), and where it writes."""
    return [
        f"experiment={preset.smoke}",
        *data,
        f"paths.output_root={work / 'outputs'}",
        f"paths.teacher_cache={work / 'teachers'}",
        f"hydra.run.dir={work / 'runs' / label}",
    ]


# ---------------------------------------------------------------------------------------------------------
# tiny files in the real formats
# ---------------------------------------------------------------------------------------------------------


def images_per_class(batch_size: int, steps: int, classes: int, held_out: float) -> int:
    """Training images per class for ``steps`` full batches after ``held_out`` of them go to validation."""
    return math.ceil(batch_size * steps / (1.0 - held_out) / classes) + 1


def cifar_files(preset: Preset, folder: Path, steps: int) -> list[str]:
    """CIFAR pickles (also the base of GCD data) for ``steps`` batches; the data folder's override."""
    from divergence_lab.data.cifar import LAYOUT, write_cifar

    data = preset.cfg.data
    base, key = (data.base, "data.base.data_dir") if "base" in data else (data, "data.data_dir")
    classes = LAYOUT[base.variant].classes
    per_class = images_per_class(int(data.batch_size), steps, classes, float(base.val_fraction))
    write_cifar(folder, base.variant, per_class, test_per_class=TEST_PER_CLASS)
    return [f"{key}={folder}"]


def model_folder(key: str) -> str:
    """The folder of the model at config ``key``: ``teacher`` (``method.teacher.model``), else ``student``."""
    return "teacher" if key.startswith("method.teacher.") else "student"


def glue_files(preset: Preset, folder: Path, steps: int) -> list[str]:
    """A GLUE task's TSV files for ``steps`` batches and randomly initialised BERT folders of the sizes of
    :data:`GLUE_MODELS`, each with the data's tokenizer; the overrides of the data and model folders."""
    from transformers import AutoModelForSequenceClassification, BertConfig

    from divergence_lab.data.glue import task_named, write_glue
    from divergence_lab.data.text_classification import local_tokenizer

    data = preset.cfg.data
    classes = len(task_named(data.task).labels)
    rows = math.ceil(int(data.batch_size) * steps / (1.0 - float(data.val_fraction))) + classes
    tokenizer = local_tokenizer(write_glue(folder / "glue", data.task, rows, TEST_PER_CLASS * classes))
    overrides = [f"data.data_dir={folder / 'glue'}"]
    for key, sizes in GLUE_MODELS.items():
        config = BertConfig(vocab_size=len(tokenizer), num_labels=classes, **sizes)
        target = folder / model_folder(key)
        AutoModelForSequenceClassification.from_config(config).save_pretrained(target)
        tokenizer.save_pretrained(target)  # as a real model folder: data.tokenizer may name it
        overrides.append(f"{key}={target}")
    return overrides


def lm_files(preset: Preset, folder: Path, steps: int) -> list[str]:
    """JSON-lines prompts ``a+b=`` with completions ``a+b`` (``steps`` batches of training rows, one batch of
    validation and test rows), a character tokenizer and GPT-2 folders of the sizes of :data:`LM_MODELS`
    (with the data's length as positions) for the models the preset reads from a folder (``model=lm_local``;
    a teacher it builds from its config needs none), the tokenizer saved in each; the overrides."""
    import numpy as np
    from omegaconf import OmegaConf

    from divergence_lab.data.text.tokenizer import build_char_tokenizer
    from divergence_lab.models.causal_lm import build_causal_lm

    cfg = preset.cfg
    batch = int(cfg.data.batch_size)
    rng = np.random.default_rng(0)
    data_folder = folder / "jsonl"
    data_folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for name, count in (("train.jsonl", batch * steps), ("validation.jsonl", batch), ("test.jsonl", batch)):
        a, b = rng.integers(0, 10**LM_OPERAND_DIGITS, size=(2, count))
        rows = [{"prompt": f"{x}+{y}=", "completion": str(x + y)} for x, y in zip(a, b, strict=True)]
        (data_folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
        texts += [row["prompt"] + row["completion"] for row in rows]
    tokenizer = build_char_tokenizer("".join(texts))
    overrides = [f"data.path={data_folder}"]
    for key, option in LM_MODELS.items():
        if OmegaConf.select(cfg, f"{key}._target_") != LM_FROM_FOLDER:
            continue
        model_cfg = OmegaConf.load(EXPERIMENTS.parent / "model" / f"{option}.yaml")
        model_cfg.sizes.n_positions = int(cfg.data.max_length)
        ids = (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id)
        target = folder / model_folder(key)
        build_causal_lm(model_cfg, len(tokenizer), *ids).save_pretrained(target)
        tokenizer.save_pretrained(target)
        overrides.append(f"{key}.path={target}")
    return overrides


# the data module a smoke variant builds (its _target_'s class) -> the writer of its tiny files
TINY_DATA = {
    "CIFARDataModule": cifar_files,
    "GCDDataModule": cifar_files,
    "GlueDataModule": glue_files,
    "JsonlLMDataModule": lm_files,
}


def write_tiny_data(preset: Preset, folder: Path, steps: int) -> list[str]:
    """Write tiny files of the preset's data (and model folders, where it reads its models from folders)
    under ``folder``, about ``steps`` batches of training data; the overrides that point the run at them."""
    if preset.data_kind not in TINY_DATA:
        raise ValueError(f"no tiny files for {preset.data_kind}")
    return TINY_DATA[preset.data_kind](preset, folder, steps)


# ---------------------------------------------------------------------------------------------------------
# inside one run's process: what its fits did
# ---------------------------------------------------------------------------------------------------------


class FitMeter:
    """Records every ``Trainer.fit`` of the process (the teacher cache's and the run's own): the device and
    precision it trained on, its training steps, steps/s over the steps after ``warmup`` and its peak GPU
    memory. A global forward pre-hook counts the forwards of layers with weights on a non-CUDA tensor, by
    layer class, everywhere but in the timed steps (stages included)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.fits: list[dict[str, Any]] = []
        self.off_gpu: Counter[str] = Counter()
        self._hook: Any = None

    def _count(self, module: Any, args: tuple[Any, ...]) -> None:
        import torch

        if not module._parameters:  # containers and metrics: their layers with weights are what compute
            return
        for value in args:
            if isinstance(value, torch.Tensor):
                if value.device.type != "cuda":
                    self.off_gpu[type(module).__name__] += 1
                return

    def watch_forwards(self, on: bool) -> None:
        from torch.nn.modules.module import register_module_forward_pre_hook

        if on and self._hook is None:
            self._hook = register_module_forward_pre_hook(self._count)
        elif not on and self._hook is not None:
            self._hook.remove()
            self._hook = None

    def install(self) -> None:
        """Attach a timing callback to every fit of this process (a wrapper around ``Trainer.fit``)."""
        from lightning.pytorch import Trainer

        meter, fit = self, Trainer.fit

        def measured_fit(trainer: Any, *args: Any, **kwargs: Any) -> Any:
            trainer.callbacks.append(meter.callback())
            return fit(trainer, *args, **kwargs)

        Trainer.fit = measured_fit
        self.watch_forwards(True)

    def callback(self) -> Any:
        import torch
        from lightning.pytorch import Callback

        meter = self

        class StepTimer(Callback):
            def __init__(self) -> None:
                self.record: dict[str, Any] = {}
                self.started: float | None = None

            def _sync(self, device: Any) -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                self.record = {"module": type(pl_module).__name__, "steps": 0, "steps_per_s": None}
                meter.fits.append(self.record)

            def on_train_start(self, trainer: Any, pl_module: Any) -> None:
                self.record["device"] = str(next(pl_module.parameters()).device)
                self.record["precision"] = str(trainer.precision)
                self.record["strategy"] = type(trainer.strategy).__name__

            def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
                if batch_idx == meter.warmup:
                    meter.watch_forwards(False)  # the timed steps run without the hook

            def on_train_batch_end(
                self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
            ):
                self.record["steps"] = batch_idx + 1
                last = batch_idx + 1 >= trainer.num_training_batches
                if batch_idx + 1 == meter.warmup or (last and self.started is not None):
                    self._sync(pl_module.device)
                    now = time.perf_counter()
                    if self.started is None:
                        self.started = now
                    elif now > self.started:
                        self.record["steps_per_s"] = (batch_idx + 1 - meter.warmup) / (now - self.started)

            def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
                self.started = None
                meter.watch_forwards(True)

            def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
                meter.watch_forwards(True)
                if torch.cuda.is_available():
                    self.record["peak_mib"] = torch.cuda.max_memory_allocated() / MIB

        return StepTimer()


def child(result: Path, warmup: int, argv: list[str]) -> int:
    """One run: ``dlab argv`` in this process with a :class:`FitMeter`; write what it saw to ``result``."""
    meter = FitMeter(warmup)
    meter.install()
    code: Any = 0
    sys.argv = ["dlab", *argv]
    try:
        from divergence_lab.entry.cli import main

        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException as error:  # reported in the result, not raised
        code = f"{type(error).__name__}: {error}"
    finally:
        meter.watch_forwards(False)
        content = {"exit": code, "fits": meter.fits, "off_gpu": dict(meter.off_gpu)}
        result.write_text(json.dumps(content, indent=1))
    return 0 if code == 0 else 1


# ---------------------------------------------------------------------------------------------------------
# the parent: runs, divergences, table
# ---------------------------------------------------------------------------------------------------------


def run_row(label: str, outcome: dict[str, Any] | None) -> Row:
    """The table row of one run from its child's result (None when it wrote none)."""
    if outcome is None:
        return Row(label, status="no result")
    fits = outcome.get("fits") or []
    main = fits[-1] if fits else {}
    row = Row(label, main.get("precision"), main.get("steps_per_s"), main.get("peak_mib"))
    problems = []
    if outcome.get("exit") != 0:
        problems.append(f"exit {outcome.get('exit')}")
    if not fits:
        problems.append("no fit ran")
    off_device = [
        f"{fit['module']} on {fit.get('device')}"
        for fit in fits
        if not str(fit.get("device", "")).startswith("cuda")
    ]
    if off_device:
        problems.append("fit " + ", ".join(off_device))
    if outcome.get("off_gpu"):
        shown = ", ".join(f"{name} x{count}" for name, count in sorted(outcome["off_gpu"].items())[:3])
        problems.append(f"forwards off the GPU: {shown}")
    if problems:
        row.status = "; ".join(problems)
    return row


def last_error_line(log: Path) -> str:
    """The last line of a run's log that looks like an error (else its last line)."""
    if not log.is_file():
        return "no log"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors or lines or ["empty log"])[-1][:160]


def launch(label: str, argv: list[str], work: Path, warmup: int, timeout_s: float, stem: str = "") -> Row:
    """Run ``dlab argv`` in a child process of this script (its result and log: ``work/<stem>.json|.log``,
    the stem defaulting to the label); its table row."""
    result, log = work / f"{stem or label}.json", work / f"{stem or label}.log"
    env = {
        **os.environ,
        "MPLCONFIGDIR": str(work / "matplotlib"),
        "XDG_CACHE_HOME": str(work / "cache"),
        "HYDRA_FULL_ERROR": "1",
        "WANDB_MODE": "disabled",
    }
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(result),
        "--warmup",
        str(warmup),
        "--",
        *argv,
    ]
    if timeout_s < 10:
        return Row(label, status="skipped: out of time")
    with log.open("w") as output:
        try:
            subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=ROOT, timeout=timeout_s
            )
        except subprocess.TimeoutExpired:
            return Row(label, status=f"timed out after {timeout_s:.0f}s")
    outcome = json.loads(result.read_text()) if result.is_file() else None
    row = run_row(label, outcome)
    if row.failed and outcome is not None and outcome.get("exit") != 0:
        row.status += f": {last_error_line(log)}"
    elif outcome is None:
        row.status = f"no result: {last_error_line(log)}"
    return row


def max_abs_difference(reference: list[Any], candidate: list[Any]) -> tuple[float, float]:
    """``(largest |candidate - reference|, largest |reference|)`` over pairs of tensors (candidate moved to
    the reference's device and dtype)."""
    worst, scale = 0.0, 0.0
    for ref, ours in zip(reference, candidate, strict=True):
        diff = (ours.to(ref.device, ref.dtype) - ref).abs().max().item()
        worst = max(worst, diff if math.isfinite(diff) else math.inf)
        scale = max(scale, ref.abs().max().item())
    return worst, scale


def divergence_rows(cases: list[Case] = DIVERGENCE_CASES, device: str = "cuda") -> list[Row]:
    """Values and gradients of each case in float32 on ``device`` against the plain path in float64 on the
    CPU (the upstream gradient of the values is a ramp, so every row counts differently)."""
    import torch

    from divergence_lab import divergences

    def evaluate(
        name: str, params: dict[str, Any], student: Any, teacher: Any, variant: str = ""
    ) -> list[Any]:
        """Values, then gradients: the forward inside bf16 autocast for an ``@bf16`` variant, the backward
        outside it (as Lightning's mixed precision runs a training step)."""
        execution, _, autocast = variant.partition("@")
        member = divergences.build(name, **params, **({"execution": execution} if execution else {}))
        s, t = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=bool(autocast)):
            values = member(s, t)
        upstream = torch.linspace(-1.0, 2.0, len(values), dtype=values.dtype, device=values.device)
        grads = torch.autograd.grad((values * upstream).sum(), (s, t))
        return [values.detach(), *grads]

    rows = []
    generator = torch.Generator().manual_seed(0)
    for name, params, (n, c), variants in cases:
        student = 3.0 * torch.randn(n, c, generator=generator, dtype=torch.float64)
        teacher = 3.0 * torch.randn(n, c, generator=generator, dtype=torch.float64)
        reference: list[Any] | None = None
        for variant in variants:
            execution, _, autocast = variant.partition("@")
            label = (
                f"{name} {execution or 'batch'}{' bf16-autocast' if autocast else ''} {device} fp32 {n}x{c}"
            )
            try:
                if reference is None:
                    reference = evaluate(name, params, student, teacher, "plain" if execution else "")
                ours = evaluate(name, params, student.float().to(device), teacher.float().to(device), variant)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
            except Exception as error:  # one row says what failed
                rows.append(Row(label, status=f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"))
                continue
            worst, scale = max_abs_difference(reference, ours)
            ok = worst <= TOLERANCE * max(1.0, scale)
            status = "ok" if ok else f"above {TOLERANCE:g} x max(1, {scale:.3g})"
            rows.append(
                Row(label, "bf16-mixed" if autocast else "32-true", max_abs_diff=worst, status=status)
            )
    return rows


def coin_reward(prompt: str, completion: str, answers: frozenset) -> float:
    """1 when the sum of the completion's code points is odd, else 0: a deterministic coin per completion,
    so a random policy's groups hold both rewards and the policy-gradient term is not zero."""
    return float(sum(map(ord, completion)) % 2)


@dataclass
class RlvrStep:
    """One ``rlvr`` training step outside Lightning, as ``PolicyOptimisationModule.training_step`` computes
    it: the rollout of ``batch``'s prompts, the group advantages, the objective (policy gradient, the
    reference's forward, the regulariser), the backward, gradient clipping and the optimiser step, inside
    ``autocast`` (a dtype for ``*-mixed`` precisions, else None)."""

    module: Any
    optimizer: Any
    batch: dict[str, Any]
    precision: str
    autocast: Any = None

    def __call__(self, step: int) -> float:
        """Run training step ``step`` (it seeds the samples); the loss."""
        import torch

        from divergence_lab.methods.group_advantages import group_advantages
        from divergence_lab.methods.rlvr import scheduled_beta

        module, settings = self.module, self.module.settings
        enabled = self.autocast is not None
        with torch.autocast(module.device.type, dtype=self.autocast, enabled=enabled):
            rollout, reference_rollout = module.rollout(self.batch, step)
            advantages = group_advantages(
                rollout.rewards, settings.advantage, settings.scale_rewards, settings.pass_k
            )
            advantages = advantages.reshape(-1).to(module.device)
            beta = scheduled_beta(settings.regulariser, 0.0)  # at the run's first step
            terms = module.objective(rollout, reference_rollout, advantages, None, beta)
        self.optimizer.zero_grad()
        terms["loss"].backward()
        if settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(module.model.parameters(), settings.max_grad_norm)
        self.optimizer.step()
        return float(terms["loss"].detach())


def rlvr_step_setup(
    divergence: str,
    estimator: str,
    shape: StepShape = StepShape(),
    device: str = "cuda",
    overrides: tuple[str, ...] = (),
) -> RlvrStep:
    """A step of ``experiment=rlvr_local`` (with ``divergence``, ``method.regulariser.estimator`` and
    ``overrides``) on ``device``: a GPT-2 policy of ``shape`` and a reference of the same sizes from another
    seed (at π₀ itself the first step's regulariser gradient would be zero; the cost is the same),
    ``data.batch_size`` distinct random prompts and a character tokenizer of ``shape.vocab`` ids; the fused
    linear path as ``method.fused_linear`` decides, the precision as ``trainer.precision`` resolves on
    ``device`` (32-true off CUDA)."""
    import torch

    from divergence_lab import divergences
    from divergence_lab.data.text.batches import right_padded_batch
    from divergence_lab.data.text.rows import EvalPrompt
    from divergence_lab.data.text.tokenizer import build_char_tokenizer
    from divergence_lab.methods.classifier import make_optimizer
    from divergence_lab.methods.lm_generation import Sampling
    from divergence_lab.methods.lm_kd import uses_fused_linear
    from divergence_lab.methods.rlvr import PolicyOptimisationModule
    from divergence_lab.models.causal_lm import causal_lm_from_config
    from divergence_lab.run.pipeline import resolve_precision

    cfg = compose_experiment(
        RLVR_PRESET, (f"divergence={divergence}", f"method.regulariser.estimator={estimator}", *overrides)
    )
    method = cfg.method
    tokenizer = build_char_tokenizer("".join(chr(CHAR_BASE + i) for i in range(shape.vocab - 4)))
    if len(tokenizer) != shape.vocab:
        raise ValueError(f"the character tokenizer has {len(tokenizer)} ids, not {shape.vocab}")
    pad, bos, eos = tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    sizes = {**dict(shape.sizes), "n_positions": 1 + shape.prompt_tokens + shape.new_tokens}

    def gpt2(seed: int) -> Any:
        torch.manual_seed(seed)
        return causal_lm_from_config("gpt2", sizes, shape.vocab, pad, eos, bos)

    policy, reference = gpt2(0), gpt2(1)
    generator = torch.Generator().manual_seed(0)
    first_character = len(tokenizer.all_special_ids)
    ids = torch.randint(
        first_character, shape.vocab, (int(cfg.data.batch_size), shape.prompt_tokens), generator=generator
    )
    prompts = [[bos, *row] for row in ids.tolist()]
    module = PolicyOptimisationModule(
        policy,
        reference,
        divergences.build(**cfg.divergence),
        cfg.divergence.name,
        method,
        {tuple(row): EvalPrompt(tokenizer.decode(row[1:]), row, frozenset()) for row in prompts},
        tokenizer,
        coin_reward,
        Sampling(float(method.generation.temperature), shape.new_tokens, method.generation.top_k),
        (pad, eos),
        seed=0,
        max_epochs=1,
        evaluation={},
        fused=uses_fused_linear(method, policy, reference),
    ).to(device)
    module.train()
    optimizer = make_optimizer(module.model.parameters(), dict(method.optimizer), max_epochs=1)
    batch = right_padded_batch([(row + [eos], len(row)) for row in prompts], pad)
    precision = str(resolve_precision(cfg.trainer)) if device.startswith("cuda") else "32-true"
    autocast = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return RlvrStep(module, optimizer, batch, precision, autocast)


def time_rlvr_steps(
    setup: RlvrStep, warmup: int = RLVR_WARMUP, timed: int = RLVR_TIMED
) -> tuple[float, float | None, float]:
    """``(ms per step, peak MiB, loss)``: the mean time of ``timed`` steps (at least one) after ``warmup``
    steps, the peak GPU memory of every step (``torch.cuda.max_memory_allocated``; None off CUDA) and the
    last step's loss."""
    import torch

    if timed < 1:
        raise ValueError(f"timed steps must be at least 1 (got {timed})")
    on_cuda = setup.module.device.type == "cuda"
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for step in range(warmup):
        setup(step)
    started = time.perf_counter()
    for step in range(warmup, warmup + timed):
        loss = setup(step)  # a float: the step has finished on the device
    elapsed = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / MIB if on_cuda else None
    return 1000.0 * elapsed / timed, peak, loss


def rlvr_step_rows(
    cases: list[tuple[str, str]] = RLVR_CASES,
    shape: StepShape = StepShape(),
    device: str = "cuda",
    warmup: int = RLVR_WARMUP,
    timed: int = RLVR_TIMED,
    overrides: tuple[str, ...] = (),
) -> list[Row]:
    """One row per ``(divergence, estimator)``: the time of one rlvr step and its peak GPU memory
    (:func:`rlvr_step_setup`, :func:`time_rlvr_steps`); the row fails where ``fused_linear: auto`` does
    not choose the fused path at a vocabulary of at least ``fused_linear_min_vocab`` tokens, or a step
    fails or returns a loss that is not finite."""
    rows = []
    for divergence, estimator in cases:
        label = f"rlvr step {divergence} {estimator} {device} vocab {shape.vocab}"
        try:
            setup = rlvr_step_setup(divergence, estimator, shape, device, overrides)
            ms, peak, loss = time_rlvr_steps(setup, warmup, timed)
        except Exception as error:  # one row says what failed
            rows.append(Row(label, status=f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"))
            continue
        settings = setup.module.settings
        wants_fused = settings.fused_linear == "auto" and shape.vocab >= settings.fused_linear_min_vocab
        path = "fused" if setup.module.fused else "logits"
        status = "ok"
        if wants_fused and not setup.module.fused:
            status = f"fused_linear auto kept the logits at vocab {shape.vocab}"
        elif not math.isfinite(loss):
            status = f"loss {loss}"
        rows.append(Row(f"{label} {path}", setup.precision, 1000.0 / ms, peak, status=status, step_ms=ms))
        del setup
    return rows


def no_gpu_line() -> str | None:
    """One line saying why there is no usable CUDA GPU, or None when there is one."""
    import torch

    if torch.cuda.is_available():
        return None
    why = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device visible"
    return f"gpu-check: no usable CUDA GPU (torch {torch.__version__}: {why}); nothing run"


def prepare_run(name: str, work: Path, steps: int) -> tuple[Preset | None, list[str], str]:
    """The preset ``name`` with its smoke variant composed and its tiny files written: ``(preset, data
    overrides, "")``, or ``(None, [], why it cannot run)``."""
    smoke = smoke_variant(name)
    if not (EXPERIMENTS / f"{smoke}.yaml").is_file():
        return None, [], f"no smoke variant: add conf/experiment/{smoke}.yaml"
    preset = describe_preset(name)
    if long := preset.too_long():
        shown = ", ".join(f"{key}={value}" for key, value in long.items())
        return None, [], f"not run: {smoke} keeps {shown} (at most {SMOKE_EPOCHS})"
    try:
        data = write_tiny_data(preset, work / "data" / name, steps)
    except Exception as error:  # one row says what failed
        return None, [], f"no tiny data: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    return preset, data, ""


def check(args: argparse.Namespace, work: Path) -> list[Row]:
    """Everything the module docstring lists, in ``work``; the table's rows."""
    deadline = time.monotonic() + args.budget
    rows = [*divergence_rows(), *rlvr_step_rows()]
    ready: dict[str, tuple[Preset, list[str]]] = {}
    for name in args.only:
        preset, data, why = prepare_run(name, work, args.steps)
        if preset is None:
            rows.append(Row(smoke_variant(name), status=why))
            continue
        ready[name] = (preset, data)
        left = min(RUN_TIMEOUT_S, deadline - time.monotonic())
        argv = run_overrides(preset, data, work, preset.smoke)
        rows.append(launch(preset.smoke, argv, work, args.warmup, left))
        print(f"gpu-check: {preset.smoke} done ({rows[-1].status})", file=sys.stderr, flush=True)
    ddp = DDP_PRESET if DDP_PRESET in ready else next(iter(ready), None)
    if ddp is not None:
        preset, data = ready[ddp]
        argv = [*run_overrides(preset, data, work, "ddp"), *DDP]
        left = min(RUN_TIMEOUT_S, deadline - time.monotonic())
        rows.append(launch(f"ddp, 1 GPU ({preset.smoke})", argv, work, args.warmup, left, stem="ddp"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="GPU presets to run (default: every one)")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps per preset")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="first steps left out of steps/s")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (logs, runs, data)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: one run, result file
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.warmup, args.argv)
    if (line := no_gpu_line()) is not None:
        print(line)
        return 0
    known = gpu_presets()
    args.only = known if args.only is None else args.only
    if unknown := sorted(set(args.only) - set(known)):
        parser.error(f"not GPU presets: {', '.join(unknown)}; known: {', '.join(known)}")
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and smaller than --steps")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty: its finished runs would not run again")
    started = time.monotonic()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        rows = check(args, args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
            rows = check(args, Path(scratch))
    import torch

    elapsed = time.monotonic() - started
    print(f"gpu-check: {torch.cuda.get_device_name()}, torch {torch.__version__}, {elapsed:.0f}s")
    print(format_table(rows))
    if args.keep:
        print(f"gpu-check: runs, logs and data kept in {args.keep}")
    return 1 if any(row.failed for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
