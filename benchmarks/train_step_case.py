"""A digits KD training step: our LightningModule under ``lightning.Trainer`` vs a plain PyTorch loop.

    python -m benchmarks.train_step_case [rounds] [epochs_per_round]

Both train the same kind of module (same student, cached teacher, divergence, optimiser and batches) without
validation or checkpoints, with a CSV logger writing every ``log_every_n_steps`` as in a run. The two
alternate in ``rounds`` rounds of ``epochs_per_round`` epochs, so a slow spell of a shared machine hits both;
each round's first epoch is left out (Lightning's set-up per ``fit`` and first calls).

* step: the median time from one batch's start to the next one's (loading a batch, hooks, logging, the
  optimiser step) — medians, because a shared machine adds spikes of tens of milliseconds;
* epoch: the median epoch's wall time over its number of steps, the per-epoch work included.

A third variant, ``lightning_unlogged``, is the same module with a ``training_step`` that only returns the
loss: Lightning's own cost per step (hooks, the optimiser closure, its bookkeeping), which no logging
scheme removes.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import types

import lightning as L
import torch

from benchmarks.measure import emit


def build(folder: str):
    from hydra import compose, initialize_config_module

    from divergence_lab.data import instantiate_datamodule
    from divergence_lab.methods.stages import build_in_memory
    from divergence_lab.run.pipeline import stage_context

    with initialize_config_module("divergence_lab.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_root={folder}", "method.teacher.max_epochs=1"])
    datamodule = instantiate_datamodule(cfg.data, seed=0)
    module = build_in_memory(cfg, datamodule, stage_context(cfg, None, torch.device("cpu")))
    return module, datamodule, cfg.trainer.log_every_n_steps


def intervals(marks: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(marks, marks[1:], strict=False)]


class Clock(L.Callback):
    """Epoch times (between epoch starts, the last one to the end of training) and step times (between
    consecutive batch starts of one epoch)."""

    def __init__(self) -> None:
        self.epoch_starts: list[float] = []
        self.batch_starts: list[list[float]] = []
        self.epochs: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_starts.append(time.perf_counter())
        self.batch_starts.append([])

    def on_train_batch_start(self, *args: object) -> None:
        self.batch_starts[-1].append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs = intervals([*self.epoch_starts, time.perf_counter()])

    def steps(self) -> list[float]:
        return [step for starts in self.batch_starts[1:] for step in intervals(starts)]


def lightning_run(module, datamodule, epochs: int, log_every_n_steps: int) -> tuple[list[float], list[float]]:
    """(step times, epoch times) of ``epochs`` epochs, the first left out."""
    clock = Clock()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tempfile.mkdtemp(), name="", version=""),
        log_every_n_steps=log_every_n_steps,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[clock],
    )
    trainer.fit(module, datamodule=datamodule)
    return clock.steps(), clock.epochs[1:]


def plain_run(module, datamodule, optimizer, epochs: int) -> tuple[list[float], list[float]]:
    """(step times, epoch times) of ``epochs`` epochs of a plain loop, the first left out."""
    steps, times = [], []
    module.train()
    for _ in range(epochs):
        start = time.perf_counter()
        starts = []
        for x, y in datamodule.train_dataloader():
            starts.append(time.perf_counter())
            loss = module.losses(x, y)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
        steps.append(intervals(starts))
    return [step for epoch in steps[1:] for step in epoch], times[1:]


def unlogged(module: L.LightningModule) -> L.LightningModule:
    """``module`` with a training step that returns the loss and logs nothing."""
    module.training_step = types.MethodType(lambda self, batch, index: self.losses(*batch)["loss"], module)
    module.on_train_batch_end = types.MethodType(lambda self, *args: None, module)
    return module


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    with tempfile.TemporaryDirectory() as folder:
        lightning_module, datamodule, log_every = build(folder)
        bare_module, bare_data, _ = build(folder)
        unlogged(bare_module)
        plain_module, plain_data, _ = build(folder)
        optimizer = plain_module.configure_optimizers()
        steps = len(datamodule.train_dataloader())
        variants = {
            "lightning": lambda: lightning_run(lightning_module, datamodule, epochs, log_every),
            "lightning_unlogged": lambda: lightning_run(bare_module, bare_data, epochs, log_every),
            "plain": lambda: plain_run(plain_module, plain_data, optimizer, epochs),
        }
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in variants}
        for _ in range(rounds):
            for name, run in variants.items():
                step_times, epoch_times = run()
                times[name][0].extend(step_times)
                times[name][1].extend(epoch_times)
    record = {"steps_per_epoch": steps, "epochs_timed": len(times["plain"][1])}
    for name, (step_times, epoch_times) in times.items():
        record[f"{name}_step_ms"] = 1e3 * statistics.median(step_times)
        record[f"{name}_epoch_per_step_ms"] = 1e3 * statistics.median(epoch_times) / steps
    emit(
        {
            **record,
            "log_every_n_steps": log_every,
            "threads": torch.get_num_threads(),
        }
    )


if __name__ == "__main__":
    main()
