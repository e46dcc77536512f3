"""A Hydra app whose trials fail on schedule, to test the Optuna sweeper's bookkeeping.

Job numbers 1, 5, 9, ... raise; 2, 6, 10, ... return NaN; the others return ``x``. ``+fail_all=1`` makes
every job raise.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=".", config_name="objective")
def objective(cfg: DictConfig) -> float:
    job = HydraConfig.get().job.num
    if job % 4 == 1 or cfg.get("fail_all"):
        raise RuntimeError(f"planned failure of job {job}")
    if job % 4 == 2:
        return float("nan")
    return float(cfg.x)


if __name__ == "__main__":
    objective()
