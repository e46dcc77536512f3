"""The run-directory contract: what every finished run leaves behind, and how a run finds its checkpoint.

A run directory holds::

    config.yaml          the resolved config of the run
    fingerprint.json     the result-relevant settings and their SHA-256 (see run.fingerprint)
    .hydra/              Hydra's own record (config as composed, overrides, hydra settings)
    train.log            everything the run logged, one progress line per epoch among it
    status.json          running | finished | failed | interrupted, with host, SLURM job id and attempt
    .dlab.lock           while a process owns the folder: host, pid, start, heartbeat (run.ownership)
    metrics.json         final numbers: {"metrics": {...}, "seed", "wall_time_s", "git_commit", ...}
    checkpoints/         last.ckpt (every epoch) and best.ckpt (best optimized_metric)
    stages/              the outputs of a method's stages (teacher weights, CTS mask, SimCLR weights)
    teacher.json         the teachers a distillation run used: network and test metrics, by cache key
    csv/metrics.csv      per-epoch curves; wandb/ too when ``logger=wandb``

``metrics.json`` and ``status.json`` are the run record (:mod:`divergence_lab.run.record`); ``stages/``
holds a method's stage outputs (:mod:`divergence_lab.run.stages`). Running the same job again into the
same directory (a requeued SLURM job, or a rerun with ``hydra.sweep.dir=<that sweep>``)
returns the finished result at once, or resumes from ``last.ckpt`` (``ckpt_path: auto``, the default).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from divergence_lab.ground.record_format import CHECKPOINT_DIR, LAST_CHECKPOINT


def save_resolved_config(run_dir: Path, cfg: DictConfig) -> None:
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def tests_last_epoch(cfg: DictConfig) -> bool:
    """Whether the run tests its last epoch (``method.checkpoint_selection: last``, GCD: the evaluation
    labels must not pick an epoch) rather than its best-validation checkpoint."""
    return cfg.method.get("checkpoint_selection", "best") == "last"


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``auto`` (and ``fresh``, whose old folder contents were moved aside at launch) means this run's own
    ``checkpoints/last.ckpt`` when it exists (a resumed or requeued run), else none."""
    if ckpt_path in ("auto", "fresh"):
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        return str(last) if last.is_file() else None
    return ckpt_path
