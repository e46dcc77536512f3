"""RL post-training steps beside TRL's trainers (trl 1.16.0), on the same tiny GPT-2, prompts and batch.

    python -m benchmarks.rl_peer_case grpo <ours:rkl | ours:kl | ours:k3 | trl>
    python -m benchmarks.rl_peer_case gkd <ours | trl>
    python -m benchmarks.rl_peer_case loss <ours | trl_full | trl_chunked>

``grpo``: training steps of ``method=rlvr`` (:class:`~divergence_lab.methods.rlvr.PolicyOptimisationModule`
under ``lightning.Trainer``) and of TRL's ``GRPOTrainer``: ``PROMPTS`` prompts × ``GROUP`` samples of at
most ``MAX_NEW_TOKENS`` tokens, group advantages, β · regulariser, ``dapo`` aggregation (÷ the active
tokens), one AdamW step with the gradient clipped to norm 1. Ours with the exact per-token KL(π‖ref)
(``rkl``) or KL(ref‖π) (``kl``) over the vocabulary, or the sampled k3; TRL with its k3 (β > 0).

``gkd``: on-policy distillation steps of ``method=lm_kd`` (α = 1, λ = ``on_policy_fraction`` = 1) and of TRL's
``GKDTrainer`` (``lmbda`` = 1), generalised JSD with β = ``GKD_BETA`` (the same β in both: the weight of the
teacher in the mixture), ``PROMPTS · GROUP`` prompts per step, one completion each.

Both run from the same saved weights (the ``lm_tiny`` GPT-2 for the data's character vocabulary, initialised
from a fixed seed; the teacher of ``gkd`` from another) and the same synthetic multi-answer prompts
(``experiment=rlvr_synthetic``). Nothing is downloaded: TRL gets the data's tokenizer object and the model
loaded from a local folder (GRPOTrainer builds its reference from that folder). Each variant runs
``WARMUP_STEPS + TIMED_STEPS`` steps in its own process on ``STEP_THREADS`` thread, ``ROUNDS`` times
interleaved with the others (the run with the shorter mean step is kept: the machine may be shared). The
step time is the median interval between consecutive step starts over the timed steps (each framework's
whole loop: generation, reward, forwards, loss, backward, optimiser step, its bookkeeping); the CPU time
(user + system, all threads) per timed step is less sensitive to other jobs; tokens/s is the completion
tokens sampled in the timed steps (eos included) over their total time. Memory: the growth of the
process's peak resident set during the timed steps over its size when they start (what a step allocates
and frees; the set-up and the warm-up steps, which allocate the optimiser state and the frameworks'
caches, are left out). The time of each part of a step (generation, reference/teacher forward, policy
forward and loss, backward, ...) is measured inside the timed steps by wrapping the methods that do it,
exclusive of the parts nested in them; the rest is the optimiser step and each framework's own work. The
policy starts untrained (and equal to its reference): its samples earn no reward, so the advantages are 0,
but each framework still does all the work of a step.

``loss``: the regulariser alone at a large vocabulary: the per-token forward KL(ref‖π) averaged over
``LOSS_SIZE`` = (tokens, hidden, vocabulary), forward and backward, from last hidden states and output
weights (policy's trained, reference frozen): ours through
:func:`~divergence_lab.divergences.fused_linear_divergence` (``fused_linear: true``), TRL's full-logits
way (both models' logits, log-softmax, ``GKDTrainer.generalized_jsd_loss`` at β = 0) and TRL's own chunked
``_chunked_divergence_loss`` (``DistillationTrainer``'s loss). Memory and time as in
:mod:`benchmarks.fused_linear_case`.

Without trl installed (``pip install -e '.[bench]'``) the TRL variants print one line and the table says so.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.fused_linear_case import cap_allocations, reset_peak_rss
from benchmarks.measure import current_rss_bytes, emit, peak_rss_bytes

PROMPTS, GROUP = 8, 8  # P prompts x G samples per RL step; gkd: P * G prompts, one completion each
MAX_NEW_TOKENS = 16
BETA = 0.1  # the regulariser's weight (TRL: beta)
GKD_BETA = 0.5  # generalised JSD: weight of the teacher in the mixture, in both
LEARNING_RATE = 1.0e-3
MAX_GRAD_NORM = 1.0  # rlvr's default clipping; lm_kd clips nothing (TRL: max_grad_norm 0)
CLIP_EPSILON = 0.2
WARMUP_STEPS, TIMED_STEPS = 2, 8
ROUNDS = 2  # each step variant runs this many times, interleaved; the faster run is kept (a shared machine)
POLICY_SEED, TEACHER_SEED = 0, 1
LOSS_SIZE = (2048, 64, 32768)  # (tokens, hidden, vocabulary) of the loss-only case
LOSS_REPEATS = 1  # the time of the second step (the first one allocates)
LOSS_TARGET = 0.25  # ours / TRL full logits, peak memory
TRL_MISSING = "trl is not installed: pip install -e '.[bench]' for the TRL side of this case"
COMPOSE = ["experiment=rlvr_synthetic"]
GRPO_VARIANTS = ("ours:rkl", "ours:kl", "ours:k3", "trl")
GKD_VARIANTS = ("ours", "trl")
LOSS_VARIANTS = ("ours", "trl_full", "trl_chunked")
CASE = "rl_peer_case"
STEP_THREADS = 1  # tiny models: one thread per side (a second one mostly waits when the machine is shared)
# the method of rlvr that computes the exact divergences it logs per step (its name across versions)
LOGGED_DIVERGENCES = ("drift", "exact_divergences")
PARTS = {
    "grpo": ("generation", "reference forward", "policy forward + loss", "backward", "logged divergences"),
    "gkd": ("generation", "teacher forward", "student forward + loss", "backward"),
}


# --- timing ----------------------------------------------------------------------------------------------


class Steps:
    """Step start times and, per named part, the exclusive time of the wrapped calls of the timed steps
    (those from ``WARMUP_STEPS`` on); ``tokens`` holds the completion tokens sampled in each step."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.cpu: list[float] = []
        self.baseline_bytes = 0
        self.tokens: list[int] = []
        self.parts: dict[str, float] = defaultdict(float)
        self._nested: list[float] = []

    def begin(self) -> None:
        """Mark a step's start (or, at the end of training, the last step's end): wall and CPU time."""
        if len(self.starts) == WARMUP_STEPS:  # the first timed step: memory from here on
            reset_peak_rss()
            self.baseline_bytes = current_rss_bytes()
        cpu = os.times()
        self.starts.append(time.perf_counter())
        self.cpu.append(cpu.user + cpu.system)

    def wrap(self, name: str | Callable[..., str], function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` timed as part ``name`` (or ``name(*args)``), less the time of wrapped calls in it."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._nested.append(0.0)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                nested = self._nested.pop()
                if self._nested:
                    self._nested[-1] += elapsed
                if len(self.starts) > WARMUP_STEPS:
                    self.parts[name if isinstance(name, str) else name(*args)] += elapsed - nested

        return timed

    def record(self) -> dict[str, Any]:
        """The timed steps' times, tokens, parts and the growth of the peak resident set during them."""
        times = [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)][WARMUP_STEPS:]
        cpu = self.cpu[-1] - self.cpu[WARMUP_STEPS]
        tokens = self.tokens[WARMUP_STEPS : WARMUP_STEPS + len(times)]
        parts = {name: seconds / len(times) for name, seconds in self.parts.items()}
        return {
            "step_s": statistics.median(times),
            "mean_step_s": sum(times) / len(times),
            "cpu_step_s": cpu / len(times),
            "tokens_per_step": sum(tokens) / len(tokens),
            "tokens_per_s": sum(tokens) / sum(times),
            "parts_s": parts,
            "extra_bytes": max(0, peak_rss_bytes() - self.baseline_bytes),
            "timed_steps": len(times),
            "threads": torch.get_num_threads(),
        }


# --- shared set-up ---------------------------------------------------------------------------------------


def config(*overrides: str):
    from hydra import compose, initialize_config_module

    with initialize_config_module("divergence_lab.conf", version_base="1.3"):
        return compose("train", overrides=[*COMPOSE, *overrides])


def saved_model(cfg, datamodule, seed: int, folder: Path) -> str:
    """The ``cfg.model`` causal LM initialised from ``seed``, saved in ``folder`` (its path)."""
    from divergence_lab.methods.lm_kd import causal_lm_for

    torch.manual_seed(seed)
    causal_lm_for(cfg.model, datamodule).save_pretrained(folder)
    return str(folder)


def loaded(folder: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)


def data(cfg):
    from divergence_lab.data import instantiate_datamodule

    datamodule = instantiate_datamodule(cfg.data, seed=0)
    datamodule.setup()
    return datamodule


def lightning_trainer(steps: Steps, max_grad_norm: float | None = None):
    import lightning as L

    class Clock(L.Callback):
        def on_train_batch_start(self, *args: object) -> None:
            steps.begin()

        def on_train_end(self, *args: object) -> None:
            steps.begin()

    return L.Trainer(
        max_steps=WARMUP_STEPS + TIMED_STEPS,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=max_grad_norm,
        callbacks=[Clock()],
    )


def trl_callback(steps: Steps):
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *args: object, **kwargs: object) -> None:
            steps.begin()

        def on_train_end(self, *args: object, **kwargs: object) -> None:
            steps.begin()

    return Clock()


def trl_arguments(folder: Path, batch_size: int, max_grad_norm: float) -> dict[str, Any]:
    """The ``TrainingArguments`` both TRL trainers share: CPU, fp32, constant AdamW, nothing logged or
    saved, and no gradient checkpointing (TRL's default; ours recomputes nothing, and with it GKD also
    generates without a key-value cache)."""
    return {
        "output_dir": str(folder / "trl"),
        "per_device_train_batch_size": batch_size,
        "max_steps": WARMUP_STEPS + TIMED_STEPS,
        "learning_rate": LEARNING_RATE,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "optim": "adamw_torch",
        "max_grad_norm": max_grad_norm,
        "gradient_checkpointing": False,
        "use_cpu": True,
        "bf16": False,
        "logging_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }


def completion_tokens(labels: torch.Tensor) -> int:
    """The labelled next-token rows of a batch: the completion tokens with their eos."""
    return int((labels[:, 1:] != -100).sum())


# --- GRPO ------------------------------------------------------------------------------------------------


def grpo_ours(estimator: str, folder: Path) -> dict[str, Any]:
    from divergence_lab import divergences
    from divergence_lab.methods.lm_kd import sampling_of
    from divergence_lab.methods.rlvr import PolicyOptimisationModule, token_mask, training_prompts
    from divergence_lab.methods.rollouts import answer_reward

    divergence = "kl" if estimator == "k3" else estimator
    cfg = config(
        f"divergence={divergence}",
        f"data.batch_size={PROMPTS}",
        f"method.group_size={GROUP}",
        f"method.generation.max_new_tokens={MAX_NEW_TOKENS}",
        "method.aggregation=dapo",
        f"method.regulariser.beta={BETA}",
        f"method.regulariser.estimator={'k3' if estimator == 'k3' else 'exact'}",
        f"method.optimizer.lr={LEARNING_RATE}",
        f"method.max_grad_norm={MAX_GRAD_NORM}",
        f"method.clip.epsilon_low={CLIP_EPSILON}",
        f"method.clip.epsilon_high={CLIP_EPSILON}",
    )
    datamodule = data(cfg)
    weights = saved_model(cfg, datamodule, POLICY_SEED, folder / "policy")
    module = PolicyOptimisationModule(
        loaded(weights),
        loaded(weights),
        divergences.build(**cfg.divergence),
        cfg.divergence.name,
        cfg.method,
        training_prompts(datamodule),
        datamodule.tokenizer,
        answer_reward,
        sampling_of(cfg.method.generation, datamodule),
        (datamodule.pad_token_id, datamodule.eos_token_id),
        seed=0,
        max_epochs=1,
        evaluation={},
    )
    steps = Steps()
    rollout = module.rollout

    def counted_rollout(batch: dict, step: int):
        policy, reference = rollout(batch, step)
        steps.tokens.append(int(token_mask(policy.batch).sum()))
        return policy, reference

    module.rollout = steps.wrap("generation", counted_rollout)
    module.reference_predictions = steps.wrap("reference forward", module.reference_predictions)
    module.objective = steps.wrap("policy forward + loss", module.objective)
    module.backward = steps.wrap("backward", module.backward)
    for logged in LOGGED_DIVERGENCES:
        if hasattr(module, logged):
            setattr(module, logged, steps.wrap("logged divergences", getattr(module, logged)))
    trainer = lightning_trainer(steps)
    trainer.fit(module, datamodule=datamodule)
    return steps.record()


def grpo_trl(folder: Path) -> dict[str, Any]:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from divergence_lab.methods.rollouts import answer_reward

    cfg = config()
    datamodule = data(cfg)
    weights = saved_model(cfg, datamodule, POLICY_SEED, folder / "policy")
    prompts = datamodule.eval_prompts("train")
    dataset = Dataset.from_dict(
        {"prompt": [p.prompt for p in prompts], "answers": [sorted(p.answers) for p in prompts]}
    )
    steps = Steps()

    def reward(prompts: list, completions: list, completion_ids: list, answers: list, **_: Any) -> list:
        steps.tokens.append(sum(len(ids) for ids in completion_ids))
        return [
            answer_reward(p, c, frozenset(a)) for p, c, a in zip(prompts, completions, answers, strict=True)
        ]

    args = GRPOConfig(
        **trl_arguments(folder, PROMPTS * GROUP, MAX_GRAD_NORM),
        num_generations=GROUP,
        max_completion_length=MAX_NEW_TOKENS,
        beta=BETA,
        loss_type="dapo",
        scale_rewards="group",
        epsilon=CLIP_EPSILON,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    trainer = GRPOTrainer(
        model=loaded(weights),
        reward_funcs=reward,
        args=args,
        train_dataset=dataset,
        processing_class=datamodule.tokenizer,
        callbacks=[trl_callback(steps)],
    )
    reference = trainer.ref_model
    trainer._generate = steps.wrap("generation", trainer._generate)
    trainer._get_per_token_logps_and_entropies = steps.wrap(
        lambda model, *_: "reference forward" if model is reference else "policy forward + loss",
        trainer._get_per_token_logps_and_entropies,
    )
    trainer.compute_loss = steps.wrap("policy forward + loss", trainer.compute_loss)
    trainer.accelerator.backward = steps.wrap("backward", trainer.accelerator.backward)
    trainer.train()
    return steps.record()


# --- GKD -------------------------------------------------------------------------------------------------


def gkd_ours(folder: Path) -> dict[str, Any]:
    from divergence_lab import divergences
    from divergence_lab.methods import lm_kd
    from divergence_lab.methods.lm_generation import Sampling

    cfg = config("divergence=gjs", f"divergence.beta={GKD_BETA}", f"data.batch_size={PROMPTS * GROUP}")
    datamodule = data(cfg)
    student = loaded(saved_model(cfg, datamodule, POLICY_SEED, folder / "student"))
    teacher = loaded(saved_model(cfg, datamodule, TEACHER_SEED, folder / "teacher"))
    module = lm_kd.LMDistillationModule(
        student,
        teacher,
        divergences.build(**cfg.divergence),
        alpha=1.0,
        on_policy_fraction=1.0,
        sampling=Sampling(1.0, MAX_NEW_TOKENS),
        special_tokens=(datamodule.pad_token_id, datamodule.eos_token_id),
        seed=0,
        optimizer={"name": "adamw", "lr": LEARNING_RATE, "weight_decay": 0.0, "scheduler": "none"},
        max_epochs=1,
        evaluation={},
    )
    steps = Steps()
    generate = lm_kd.on_policy_batch

    def counted_generation(*args: Any, **kwargs: Any) -> dict:
        batch = generate(*args, **kwargs)
        steps.tokens.append(completion_tokens(batch["labels"]))
        return batch

    lm_kd.on_policy_batch = steps.wrap("generation", counted_generation)
    module.predictions = steps.wrap(
        lambda model, *_: "student forward + loss" if model is module.model else "teacher forward",
        module.predictions,
    )
    module.distillation = steps.wrap("student forward + loss", module.distillation)
    module.backward = steps.wrap("backward", module.backward)
    trainer = lightning_trainer(steps)
    trainer.fit(module, datamodule=datamodule)
    return steps.record()


def gkd_trl(folder: Path) -> dict[str, Any]:
    from datasets import Dataset
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from divergence_lab.data.text.batches import left_padded_prompts, right_padded_batch

    cfg = config()
    datamodule = data(cfg)
    student = loaded(saved_model(cfg, datamodule, POLICY_SEED, folder / "student"))
    teacher = loaded(saved_model(cfg, datamodule, TEACHER_SEED, folder / "teacher"))
    encoded = datamodule.encoded["train"]
    dataset = Dataset.from_dict(
        {"ids": [ids for ids, _ in encoded], "prompt_length": [n for _, n in encoded]}
    )
    pad = datamodule.pad_token_id
    steps = Steps()

    def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
        """The data's right-padded batch and its prompts padded on the left (the fields GKD reads)."""
        batch = right_padded_batch([(e["ids"], e["prompt_length"]) for e in examples], pad)
        prompts = left_padded_prompts([e["ids"][: e["prompt_length"]] for e in examples], pad)
        return {**batch, "prompts": prompts["input_ids"], "prompt_attention_mask": prompts["attention_mask"]}

    args = GKDConfig(
        **trl_arguments(folder, PROMPTS * GROUP, 0.0),
        lmbda=1.0,
        beta=GKD_BETA,
        temperature=1.0,
        max_new_tokens=MAX_NEW_TOKENS,
    )
    trainer = GKDTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        data_collator=collate,
        train_dataset=dataset,
        processing_class=datamodule.tokenizer,
        callbacks=[trl_callback(steps)],
    )
    generate = trainer.generate_on_policy_outputs

    def counted_generation(*args: Any) -> tuple:
        ids, mask, labels = generate(*args)
        steps.tokens.append(completion_tokens(labels))
        return ids, mask, labels

    trainer.generate_on_policy_outputs = steps.wrap("generation", counted_generation)
    trainer.teacher_model.forward = steps.wrap("teacher forward", trainer.teacher_model.forward)
    trainer.compute_loss = steps.wrap("student forward + loss", trainer.compute_loss)
    trainer.accelerator.backward = steps.wrap("backward", trainer.accelerator.backward)
    trainer.train()
    return steps.record()


# --- the regulariser alone at a large vocabulary ---------------------------------------------------------


def loss_case(variant: str) -> dict[str, Any]:
    """Forward + backward of the token mean of KL(ref‖π) from hidden states and output weights."""
    tokens, hidden, vocabulary = LOSS_SIZE
    generator = torch.Generator().manual_seed(0)
    scale = hidden**-0.5  # logits of order 1
    policy_hidden = torch.randn(tokens, hidden, generator=generator).mul_(3).requires_grad_(True)
    policy_weight = torch.randn(vocabulary, hidden, generator=generator).mul_(scale).requires_grad_(True)
    reference_hidden = torch.randn(tokens, hidden, generator=generator).mul_(3)
    reference_weight = torch.randn(vocabulary, hidden, generator=generator).mul_(scale)
    if variant == "ours":
        from divergence_lab import divergences
        from divergence_lab.divergences import fused_linear_divergence

        divergence = divergences.build("kl", t_squared=False)

        def loss() -> torch.Tensor:
            return fused_linear_divergence(
                divergence, policy_hidden, policy_weight, reference_hidden, reference_weight
            ).mean()
    elif variant == "trl_full":
        from trl.experimental.gkd import GKDTrainer

        labels = torch.zeros(1, tokens, dtype=torch.long)

        def loss() -> torch.Tensor:
            return GKDTrainer.generalized_jsd_loss(
                (policy_hidden @ policy_weight.T)[None],
                (reference_hidden @ reference_weight.T)[None],
                labels=labels,
                beta=0.0,
            )
    else:
        from trl.trainer.distillation_trainer import _chunked_divergence_loss

        mask = torch.ones(1, tokens, dtype=torch.long)

        def loss() -> torch.Tensor:
            return _chunked_divergence_loss(
                policy_hidden[None], reference_hidden[None], policy_weight, reference_weight, mask, beta=0.0
            )[0]

    values: list[float] = []

    def step() -> float:
        policy_hidden.grad = policy_weight.grad = None
        start = time.perf_counter()
        value = loss()
        value.backward()
        values.append(float(value.detach()))
        return time.perf_counter() - start

    record: dict[str, Any] = {"memory_budget_bytes": cap_allocations()}
    reset_peak_rss()
    baseline = current_rss_bytes()
    first = step()
    record["extra_bytes"] = max(0, peak_rss_bytes() - baseline)
    times = [step() for _ in range(LOSS_REPEATS)]
    return {**record, "seconds": statistics.median(times) if times else first, "value": values[0]}


# --- the table (benchmarks.run) --------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def _mib(size: float) -> str:
    return f"{size / 1024**2:.0f} MiB"


def _step_rows(records: dict[str, dict | None], reference: str, regulariser: dict[str, str]) -> list[str]:
    theirs = records.get(reference)
    rows = []
    for name, record in records.items():
        if not record:
            rows.append(f"| {name} | {regulariser[name]} | failed | | | | | | |")
            continue
        speed = record["tokens_per_s"] / theirs["tokens_per_s"] if theirs else None
        memory = record["extra_bytes"] / theirs["extra_bytes"] if theirs and theirs["extra_bytes"] else None
        rows.append(
            f"| {name} | {regulariser[name]} | {_ms(record['step_s'])} | {_ms(record['cpu_step_s'])} | "
            f"{record['tokens_per_step']:.0f} | "
            f"{record['tokens_per_s']:.0f} | {f'{speed:.2f}×' if speed else '—'} | "
            f"{_mib(record['extra_bytes'])} | {f'{memory:.2f}×' if memory else '—'} |"
        )
    return rows


def _breakdown_rows(records: dict[str, dict | None], parts: tuple[str, ...]) -> list[str]:
    rows = []
    for name, record in records.items():
        if not record:
            continue
        spent = [record["parts_s"].get(part) for part in parts]
        rest = record["mean_step_s"] - sum(seconds or 0.0 for seconds in spent)
        cells = " | ".join("—" if seconds is None else _ms(seconds) for seconds in [*spent, rest])
        rows.append(f"| {name} | {_ms(record['mean_step_s'])} | {cells} |")
    return rows


def _steps_section(
    title: str, kind: str, records: dict[str, dict | None], regulariser: dict[str, str]
) -> list[str]:
    parts = PARTS[kind]
    return [
        title,
        "",
        "| implementation | divergence | step (median) | CPU time / step | completion tokens / step | "
        "tokens/s | vs TRL | peak RSS growth | vs TRL |",
        "|---|---|---|---|---|---|---|---|---|",
        *_step_rows(records, "trl", regulariser),
        "",
        "Where the time goes (mean per timed step, each part exclusive of the parts nested in it; rest: "
        "rewards and advantages, the optimiser step, clipping, the framework's own work):",
        "",
        f"| implementation | step (mean) | {' | '.join(parts)} | rest |",
        "|---|---|" + "---|" * (len(parts) + 1),
        *_breakdown_rows(records, parts),
    ]


def _faster_of_rounds(
    case: Callable[..., dict | None], kind: str, variants: tuple[str, ...]
) -> dict[str, dict | None]:
    """Each variant's record with the shorter mean step over ``ROUNDS`` interleaved runs."""
    best: dict[str, dict | None] = dict.fromkeys(variants)
    for _ in range(ROUNDS):
        for name in variants:
            record = case(CASE, kind, name)
            if record and (best[name] is None or record["mean_step_s"] < best[name]["mean_step_s"]):
                best[name] = record
            print(f"  {kind} {name}: {record and _ms(record['mean_step_s'])} a step", file=sys.stderr)
    return best


def table(case: Callable[..., dict | None]) -> list[str]:
    """The Markdown section of ``make bench``: ``case(module, *args)`` runs one variant in a new process."""
    title = (
        f"### RL post-training beside TRL 1.16.0 (tiny GPT-2 `lm_tiny`, multi-answer prompts, {PROMPTS} × "
        f"{GROUP} completions of ≤ {MAX_NEW_TOKENS} tokens per step; {TIMED_STEPS} steps timed after "
        f"{WARMUP_STEPS}, {STEP_THREADS} thread per step process; the faster of {ROUNDS} interleaved runs of "
        "each)"
    )
    if importlib.util.find_spec("trl") is None:
        return [title, "", f"skipped: {TRL_MISSING}"]
    grpo, gkd = _faster_of_rounds(case, "grpo", GRPO_VARIANTS), _faster_of_rounds(case, "gkd", GKD_VARIANTS)
    losses = {name: case(CASE, "loss", name) for name in LOSS_VARIANTS}
    words = {
        "ours:rkl": f"β={BETA} · KL(π‖ref), exact",
        "ours:kl": f"β={BETA} · KL(ref‖π), exact",
        "ours:k3": f"β={BETA} · k3 (descends KL(ref‖π))",
        "trl": f"β={BETA} · k3",
    }
    lines = [title, ""]
    lines += _steps_section(
        "#### GRPO step: `method=rlvr` vs `GRPOTrainer` (dapo aggregation, group-scaled advantages)",
        "grpo",
        grpo,
        words,
    )
    gjs = f"generalised JSD, β={GKD_BETA}"
    lines += [""] + _steps_section(
        f"#### On-policy distillation step: `method=lm_kd` (α=1, λ=1) vs `GKDTrainer` (lmbda=1), "
        f"{PROMPTS * GROUP} prompts",
        "gkd",
        gkd,
        {"ours": gjs, "trl": gjs},
    )
    tokens, hidden, vocabulary = LOSS_SIZE
    full = losses.get("trl_full")
    lines += [
        "",
        f"#### The regulariser alone: mean per-token KL(ref‖π) over {tokens} tokens × hidden {hidden} × "
        f"vocabulary {vocabulary}, forward + backward (fp32)",
        "",
        "| implementation | time (second step) | peak RSS growth | vs TRL full logits | value | target |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "ours": "ours: `fused_linear_divergence` (`fused_linear: true`)",
        "trl_full": "TRL full logits (`GKDTrainer.generalized_jsd_loss`, β=0)",
        "trl_chunked": "TRL chunked (`_chunked_divergence_loss`, β=0)",
    }
    for name, record in losses.items():
        if not record:
            lines.append(f"| {names[name]} | failed | | | | |")
            continue
        ratio = record["extra_bytes"] / full["extra_bytes"] if full else None
        target = ""
        if name == "ours" and ratio is not None:
            target = f"{'✅' if ratio <= LOSS_TARGET else '❌'} ≤ {LOSS_TARGET}×"
        lines.append(
            f"| {names[name]} | {_ms(record['seconds'])} | {_mib(record['extra_bytes'])} | "
            f"{f'{ratio:.2f}×' if ratio else '—'} | {record['value']:.5f} | {target} |"
        )
    return lines


def main() -> None:
    kind, variant = sys.argv[1], sys.argv[2]
    choices = {"grpo": GRPO_VARIANTS, "gkd": GKD_VARIANTS, "loss": LOSS_VARIANTS}
    if kind not in choices or variant not in choices[kind]:
        raise SystemExit(f"usage: {kind} must be one of {', '.join(choices)} with a variant of {choices}")
    if variant != "ours" and not variant.startswith("ours:") and importlib.util.find_spec("trl") is None:
        raise SystemExit(TRL_MISSING)
    if kind == "loss":
        emit({"variant": variant, **loss_case(variant)})
        return
    torch.set_num_threads(STEP_THREADS)
    with tempfile.TemporaryDirectory() as folder:
        if kind == "grpo":
            estimator = variant.partition(":")[2]
            record = grpo_ours(estimator, Path(folder)) if estimator else grpo_trl(Path(folder))
        else:
            record = gkd_ours(Path(folder)) if variant == "ours" else gkd_trl(Path(folder))
    emit({"kind": kind, "variant": variant, **record})


if __name__ == "__main__":
    main()
