"""A Hydra app whose per-epoch curve is known, to test the Optuna sweeper's pruning, seeds and attributes.

After epoch ``e`` of ``epochs`` its value is ``x * e / epochs + seed * seed_step``; each epoch is reported
to the job's trial through the reporter a training job uses
(:class:`~divergence_lab.run.trial_reports.TrialReporter`), and the job stops when its trial is pruned.
It writes ``metrics.json`` (``val/x``, ``test/x`` = twice it, the seed and the pruned entry) and
``fingerprint.json`` as a training job does.
"""

import math
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from divergence_lab.ground.record_format import METRICS_FILE, RUN_FINGERPRINT_FILE
from divergence_lab.run.fingerprint import write_fingerprint
from divergence_lab.run.record import write_json_atomically
from divergence_lab.run.trial_channel import TrialChannel
from divergence_lab.run.trial_reports import TrialReporter, pruned_entry


@hydra.main(version_base="1.3", config_path=".", config_name="curve")
def curve(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    run_dir = Path(hydra_config.runtime.output_dir)
    channel = TrialChannel.from_env()
    reporter = TrialReporter(channel, hydra_config.sweeper) if channel is not None else None
    value = math.nan
    for epoch in range(1, cfg.epochs + 1):
        time.sleep(cfg.epoch_s)
        value = cfg.x * epoch / cfg.epochs + cfg.seed * cfg.seed_step
        if reporter is not None and reporter.epoch_end(epoch, value):
            break
    write_fingerprint(run_dir / RUN_FINGERPRINT_FILE, {"x": cfg.x, "seed": cfg.seed})
    record = {"metrics": {"val/x": value, "test/x": 2 * value}, "seed": cfg.seed, **pruned_entry(channel)}
    write_json_atomically(run_dir / METRICS_FILE, record)
    return value


if __name__ == "__main__":
    curve()
