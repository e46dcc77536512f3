"""A digits KD training step: our LightningModule under ``lightning.Trainer`` vs a plain PyTorch loop.

    python -m benchmarks.train_step_case [epochs]

Both train the same module (same student, cached teacher, divergence, optimiser and batches) for the same
number of epochs without validation or checkpoints; the time per optimiser step is compared.
"""

from __future__ import annotations

import sys
import tempfile
import time

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
    return build_in_memory(cfg, datamodule, stage_context(cfg, None, torch.device("cpu"))), datamodule


def main() -> None:
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory() as folder:
        module, datamodule = build(folder)
        steps = epochs * len(datamodule.train_dataloader())
        trainer = L.Trainer(
            max_epochs=epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        lightning_step = (time.perf_counter() - start) / steps

        module, datamodule = build(folder)
        optimizer = module.configure_optimizers()
        module.train()
        start = time.perf_counter()
        for _ in range(epochs):
            for x, y in datamodule.train_dataloader():
                loss = module.losses(x, y)["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        plain_step = (time.perf_counter() - start) / steps
    emit(
        {
            "steps": steps,
            "lightning_step_ms": 1e3 * lightning_step,
            "plain_step_ms": 1e3 * plain_step,
            "threads": torch.get_num_threads(),
        }
    )


if __name__ == "__main__":
    main()
