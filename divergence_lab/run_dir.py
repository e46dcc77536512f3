"""The run-directory contract: what every finished run leaves behind, and how a run finds its checkpoint.

A run directory holds::

    config.yaml          the resolved config of the run
    fingerprint.json     the result-relevant settings and their SHA-256 (see run_fingerprint)
    .hydra/              Hydra's own record (config as composed, overrides, hydra settings)
    train.log            everything the run logged, one progress line per epoch among it
    status.json          running | finished | failed | interrupted, with host, SLURM job id and attempt
    metrics.json         final numbers: {"metrics": {...}, "seed", "wall_time_s", "git_commit", ...}
    checkpoints/         last.ckpt (every epoch) and best.ckpt (best optimized_metric)
    csv/metrics.csv      per-epoch curves; wandb/ too when ``logger=wandb``

``metrics.json`` is written last, atomically: its presence means the run finished. Running the same job
again into the same directory (a requeued SLURM job, or a rerun with ``hydra.sweep.dir=<that sweep>``)
returns the finished result at once, or resumes from ``last.ckpt`` (``ckpt_path: auto``, the default).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

METRICS_FILE = "metrics.json"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"


def git_commit(path: Path = Path(__file__).parent) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the source tree the code runs from."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": bool(status.strip())}


def is_global_rank_zero() -> bool:
    """True in the process that owns the run directory: rank 0 of multi-process training, else always."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0))) == 0


def divergence_label(cfg: DictConfig) -> str | None:
    """The divergence a run is labelled by, or None for methods that use none (``method=teacher``)."""
    return cfg.divergence.name if cfg.method.get("uses_divergence", True) else None


def save_resolved_config(run_dir: Path, cfg: DictConfig) -> None:
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def resolve_checkpoint(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``auto`` (and ``fresh``, whose old folder contents were moved aside at launch) means this run's own
    ``checkpoints/last.ckpt`` when it exists (a resumed or requeued run), else none."""
    if ckpt_path in ("auto", "fresh"):
        last = run_dir / CHECKPOINT_DIR / LAST_CHECKPOINT
        return str(last) if last.is_file() else None
    return ckpt_path


def write_metrics(
    run_dir: Path, cfg: DictConfig, metrics: dict[str, float], started: float
) -> dict[str, Any]:
    """Write ``metrics.json`` (atomically) and return its content."""
    import lightning
    import torch

    record = {
        "metrics": {name: float(value) for name, value in sorted(metrics.items())},
        "method": cfg.method.name,
        "divergence": divergence_label(cfg),
        "data": cfg.data.name,
        "study": cfg.study,
        "seed": cfg.seed,
        "wall_time_s": round(time.time() - started, 3),
        "threads": torch.get_num_threads(),  # the last bits of float sums depend on it
        "git": git_commit(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lightning": lightning.__version__,
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomically(run_dir / METRICS_FILE, record)
    return record


def write_json_atomically(path: Path, content: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def finished_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's metrics.json when it finished, else None (also when the file is unreadable: rerun).

    The caller has checked that the folder holds this very config (:mod:`divergence_lab.run_fingerprint`).
    """
    try:
        record = json.loads((run_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None
